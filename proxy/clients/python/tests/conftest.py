"""Fixtures: a real bus (`defibus standalone --no-proxy`) and a real proxy process
(`defibus proxy`) that tests may kill and restart on the same port.

The `defibus` binary comes from $DEFIBUS_BIN, else target/debug/defibus at the repository
root (scripts/python-tests.sh builds it)."""

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from defibus_proxy import HttpClient, Identity, StreamClient  # noqa: E402

REPO = Path(__file__).resolve().parents[4]
DEFIBUS = os.environ.get("DEFIBUS_BIN", str(REPO / "target" / "debug" / "defibus"))
WAIT = 30.0


class Process:
    """A child process whose stdout (and, with ``log_ready``, its log on stderr too) is read
    line by line on a thread."""

    def __init__(self, args, ready, log_ready=False):
        self.args = [str(a) for a in args]
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines = queue.Queue()
        self.stderr = []
        err_sinks = (self.stderr.append, self.lines.put) if log_ready else (self.stderr.append,)
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, *err_sinks), daemon=True).start()
        self.match = self.wait_for(ready)

    @staticmethod
    def _read(stream, *sinks):
        for line in stream:
            for sink in sinks:
                sink(line)

    def wait_for(self, pattern, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.args} exited: {''.join(self.stderr)[-2000:]}")
                continue
            found = re.search(pattern, line)
            if found:
                return found
        raise TimeoutError(f"{self.args}: no line matching {pattern!r}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def defibus(*args, check=True, timeout=WAIT):
    """Runs a defibus client command; returns its CompletedProcess."""
    result = subprocess.run(
        [DEFIBUS, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"defibus {args}: {result.returncode}: {result.stderr}")
    return result


class Bus:
    def __init__(self, nameserver, standalone, gsl, sgs):
        self.nameserver = nameserver
        self.standalone = standalone
        self.gsl = gsl
        self.sgs = sgs

    def deploy_service(self, service_id, name):
        """Applies and deploys a service in A10 through the standalone bus's SGS."""
        defibus("sgs", "service", "apply", "--sgs", self.sgs, "--id", service_id, "--name", name,
                "--owner", "pytest", "--areas", "A10", "--queues", 2)
        defibus("sgs", "service", "deploy", "--sgs", self.sgs, "--id", service_id)

    def create_topic(self, topic, queues=2):
        defibus("admin", "topic", "create", "--nameserver", self.nameserver, "--topic", topic,
                "--queues", queues)

    def committed(self, topic, group):
        """Messages `group` has committed on `topic`, summed over queues (`admin topic stats`
        lists a group while it has a live member)."""
        stats = defibus("admin", "topic", "stats", "--nameserver", self.nameserver, "--topic", topic)
        lines = stats.stdout.splitlines()
        header = lines[0].split()
        total = 0
        for line in lines[1:]:
            row = dict(zip(header, line.split()))
            if row.get("GROUP") == group and row.get("COMMITTED", "-").isdigit():
                total += int(row["COMMITTED"])
        return total


class Proxy:
    """A `defibus proxy` process with its own data directory; restart() brings it back on the
    same address and directory. `args` are extra flags."""

    def __init__(self, nameserver, data_dir, listen="127.0.0.1:0", args=()):
        self.nameserver = nameserver
        self.data_dir = data_dir
        self.args = list(args)
        self.process = None
        self.start(listen)

    def start(self, listen):
        self.process = Process(
            [DEFIBUS, "proxy", "--listen-addr", listen, "--nameserver", self.nameserver,
             "--data-dir", self.data_dir, *self.args],
            r"proxy listening on (https?://\S+)",
        )
        self.url = self.process.match.group(1)
        self.addr = self.url.split("://", 1)[1]

    def kill(self):
        self.process.stop(signal.SIGKILL)

    def restart(self):
        deadline = time.monotonic() + WAIT
        while True:
            try:
                return self.start(self.addr)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture(scope="session")
def bus():
    with tempfile.TemporaryDirectory() as data:
        standalone = Process(
            [DEFIBUS, "standalone", "--no-proxy", "--data-dir", data, "--nameserver-addr",
             "127.0.0.1:0", "--port-base", "0", "--shards", "1"],
            r"^\s*nameserver\s+(\S+)",
        )
        nameserver = standalone.match.group(1)
        gsl = standalone.wait_for(r"^\s*gsl\s+(\S+)").group(1)
        sgs = standalone.wait_for(r"^\s*sgs\s+(\S+)").group(1)
        deadline = time.monotonic() + WAIT
        while defibus("admin", "topic", "list", "--nameserver", nameserver, check=False).returncode:
            if time.monotonic() > deadline:
                raise TimeoutError("the broker never registered")
            time.sleep(0.1)
        yield Bus(nameserver, standalone, gsl, sgs)
        standalone.stop()


@pytest.fixture()
def proxy_factory(bus):
    """Starts proxies (extra flags as arguments), each on its own data directory."""
    proxies = []
    with tempfile.TemporaryDirectory() as root:

        def make(*args):
            proxy = Proxy(bus.nameserver, os.path.join(root, f"proxy-{len(proxies)}"), args=args)
            proxies.append(proxy)
            return proxy

        yield make
        for proxy in proxies:
            proxy.process.stop()


@pytest.fixture()
def proxy(proxy_factory):
    return proxy_factory()


def identity(instance):
    return Identity(system="pytest", area="A10", group="tests", instance=instance)


@pytest.fixture()
def http(proxy):
    return HttpClient(proxy.url, identity=identity("http"))


@pytest.fixture()
def stream_factory(proxy):
    clients = []

    def make(instance, **kwargs):
        client = StreamClient(proxy.url, identity(instance), **kwargs).connect()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def wait_until(what, condition, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
