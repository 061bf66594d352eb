#!/usr/bin/env python3
"""Repeats issue 13's hostile-client attacks against real processes and prints what each cost.

Each attack runs against a fresh `defibus nameserver` and `defibus broker` (separate
processes, so each one's RSS is its own) or a `defibus standalone` (for the proxy), from
source address 127.0.0.2, while a normal client works from 127.0.0.1. It prints, per attack,
the server's RSS before, at the peak and after, how long the attack's connections stayed
open, and whether (and how fast) the normal client was served meanwhile. The assertions of
these bounds live in the tests (engine/tests/broker_hostile.rs, svc/tests/hostile_clients.rs,
proxy/tests/hostile_scenario.rs); this script gives the figures for a release build.

Usage: scripts/hostile_figures.py [--defibus target/release/defibus] [--only NAME]
"""

import argparse
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time

HEADER_LEN = 40
MAGIC = b"DFB1"
ATTACKER = "127.0.0.2"


def crc32c(data, crc=0):
    table = crc32c.table
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


crc32c.table = _table()


def header(command, request_id, body_len, ext_len=0):
    """A frame header with a valid header checksum (the body checksum is left 0)."""
    request = 1  # flag REQUEST
    fields = MAGIC + struct.pack("<BBHQH6sII", 1, request, command, request_id, 0, b"\0" * 6,
                                 ext_len, body_len)
    crc = crc32c(fields + b"\0" * 4 + b"\0" * 4)
    return fields + struct.pack("<II", crc, 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def connect_from(port, timeout=5.0):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ATTACKER, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def is_closed(s):
    """True when the server closed `s` (a read returns EOF or a reset)."""
    s.setblocking(False)
    try:
        while True:
            data = s.recv(65536)
            if data == b"":
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


def wait_until(what, check, deadline_s):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    raise SystemExit(f"hostile_figures: gave up waiting for {what}")


class Bus:
    """A nameserver and a broker as separate processes, on free ports, in a temp dir."""

    def __init__(self, defibus):
        self.defibus = defibus
        self.dir = tempfile.mkdtemp(prefix="hostile-")
        self.ns_port = free_port()
        self.broker_port = free_port()
        self.ns_log = open(os.path.join(self.dir, "nameserver.log"), "w")
        self.broker_log_path = os.path.join(self.dir, "broker.log")
        self.broker_log = open(self.broker_log_path, "w")
        self.ns = subprocess.Popen(
            [defibus, "nameserver", "--listen-addr", f"127.0.0.1:{self.ns_port}"],
            stdout=self.ns_log, stderr=self.ns_log)
        self.broker = subprocess.Popen(
            [defibus, "broker", "--listen", "127.0.0.1", "--port-base", str(self.broker_port),
             "--shards", "1", "--data-dir", os.path.join(self.dir, "broker"),
             "--nameserver", f"127.0.0.1:{self.ns_port}"],
            stdout=self.broker_log, stderr=self.broker_log)
        wait_until("the broker to register", self.served, 30)

    def client(self, *args, timeout=10):
        started = time.monotonic()
        result = subprocess.run(
            [self.defibus, *args, "--nameserver", f"127.0.0.1:{self.ns_port}"],
            capture_output=True, text=True, timeout=timeout)
        return result.returncode == 0, (time.monotonic() - started) * 1000

    def served(self):
        ok, _ = self.client("admin", "broker", "list")
        return ok

    def produce(self):
        return self.client("produce", "--topic", "A10-20190001", "during the attack")

    def stop(self):
        for p in (self.broker, self.ns):
            p.terminate()
        for p in (self.broker, self.ns):
            p.wait(timeout=30)


def report(name, server, before, peak, after, held, served, extra=""):
    print(f"{name:<34} {server:<10} RSS {before:7.1f} -> peak {peak:7.1f} -> after {after:7.1f} MiB"
          f"   held {held:>9}   normal client: {served}{extra}")
    sys.stdout.flush()


def partial_frames(bus, name, pid, port, count, body_len, send_len):
    before = rss_mib(pid)
    conns = []
    unread = 0
    for i in range(count):
        try:
            s = connect_from(port)
            s.sendall(header(0x0101, i + 1, body_len))
            s.settimeout(0.3)
            try:
                s.sendall(b"\0" * send_len)
            except socket.timeout:
                # The server stopped reading this one (its budget is spent): the bytes wait
                # in the kernel's buffers, not in the server.
                unread += 1
            conns.append(s)
        except OSError:
            # Refused or closed at once (a cap): that is the bound working.
            conns.append(None)
    time.sleep(0.5)  # let the server read what was sent (a measurement pause, not a sync)
    peak = rss_mib(pid)
    ok, ms = bus.produce() if name.startswith("broker") else bus.client("admin", "broker", "list")
    started = time.monotonic()
    open_conns = [s for s in conns if s is not None]
    wait_until("the partial frames to be closed",
               lambda: all(is_closed(s) for s in open_conns), 60)
    held = f"{time.monotonic() - started + 0.5:.1f} s"
    for s in open_conns:
        s.close()
    time.sleep(1.0)
    after = rss_mib(pid)
    report(f"{name}: {count} x {send_len >> 20}/{(body_len + (1 << 20) - 1) >> 20} MiB frames", name.split()[0], before, peak, after,
           held, f"{'served' if ok else 'REFUSED'} in {ms:.0f} ms",
           f"   ({len(open_conns)} of {count} accepted, {unread} left unread)")


def slowloris(bus, name, port):
    s = connect_from(port)
    frame = header(0x0108, 1, 200) + b"\0" * 200
    started = time.monotonic()
    for b in frame:
        try:
            s.send(bytes([b]))
        except OSError:
            break
        time.sleep(0.1)
        if is_closed(s):
            break
    held = time.monotonic() - started
    ok, ms = bus.client("admin", "broker", "list")
    report(f"{name}: slowloris 1 B / 100 ms", name, 0, 0, 0, f"{held:.1f} s",
           f"{'served' if ok else 'REFUSED'} in {ms:.0f} ms")
    s.close()


def trickle(bus, pid, port, count):
    before = rss_mib(pid)
    conns, refused = [], 0
    for _ in range(count):
        try:
            s = connect_from(port, timeout=2)
            s.send(MAGIC[:1])
            conns.append(s)
        except OSError:
            refused += 1
    time.sleep(0.5)
    peak = rss_mib(pid)
    ok, ms = bus.client("admin", "broker", "list")
    open_now = sum(1 for s in conns if not is_closed(s))
    for s in conns:
        s.close()
    time.sleep(0.5)
    after = rss_mib(pid)
    report(f"nameserver: {count} trickling conns", "nameserver", before, peak, after,
           f"{open_now} open", f"{'served' if ok else 'REFUSED'} in {ms:.0f} ms",
           f"   ({len(conns)} connected, {refused} refused)")


def unknown_commands(bus, port, frames):
    s = connect_from(port)
    answered = 0
    closed_after = None
    for i in range(frames):
        try:
            s.sendall(header(0x7FFF, i + 1, 0))
        except OSError:
            closed_after = i
            break
        if i % 4 == 3 and is_closed(s):
            closed_after = i + 1
            break
        answered += 1
    s.close()
    report("broker: unknown-command frames", "broker", 0, 0, 0,
           f"closed after {closed_after}" if closed_after else f"open after {frames}", "-")


def log_flood(bus, port, conns):
    def info_lines():
        with open(bus.broker_log_path) as f:
            return sum(1 for line in f if " INFO " in line or " WARN " in line)
    before = info_lines()
    for i in range(conns):
        try:
            s = connect_from(port)
            s.sendall(b"GARBAGE!" * 5)
            s.close()
        except OSError:
            pass
    time.sleep(1.0)
    lines = info_lines() - before
    report(f"broker: {conns} bad connections", "broker", 0, 0, 0, f"{lines} log lines", "-")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defibus", default="target/release/defibus")
    parser.add_argument("--only", default=None, help="run only attacks whose name contains this")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    bus = Bus(os.path.abspath(args.defibus))
    bus.client("admin", "topic", "create", "--topic", "A10-20190001", "--queues", "1")
    try:
        attacks = {
            "broker-partial": lambda: partial_frames(bus, "broker", bus.broker.pid, bus.broker_port,
                                                     100, 8 << 20, 4 << 20),
            "nameserver-partial": lambda: partial_frames(bus, "nameserver", bus.ns.pid, bus.ns_port,
                                                         100, (4 << 20) - HEADER_LEN - 64, 2 << 20),
            "broker-slowloris": lambda: slowloris(bus, "broker", bus.broker_port),
            "nameserver-slowloris": lambda: slowloris(bus, "nameserver", bus.ns_port),
            "nameserver-trickle": lambda: trickle(bus, bus.ns.pid, bus.ns_port, 1023),
            "broker-unknown": lambda: unknown_commands(bus, bus.broker_port, 10_000),
            "broker-logflood": lambda: log_flood(bus, bus.broker_port, 10_000),
        }
        for name, attack in attacks.items():
            if args.only and args.only not in name:
                continue
            attack()
    finally:
        bus.stop()


if __name__ == "__main__":
    main()
