"""A latency server while 200 slow connections are held open: is an authorized client's
measurement what it is when the server is idle? (issue 33)

    python benchmarks/device_hostile.py [--rounds 30] [--slow 200] [--nofile N]
                                        [--out benchmarks/results/device_hostile.json]

One server with a token and its default limits (256 connections, 30 s per request, 32 waiting
requests). One authorized client measures the reference model (``DeviceBackend.measure``, p10
with the reference interleaved, ``max_seconds`` 1) ``--rounds`` times in each of two conditions,
alternated round by round: idle, and while another process holds ``--slow`` connections open,
each sending a request head one byte per second and never finishing it (reopened if the server
closes one), none with a token. Per condition, median and spread (p10–p90 over the rounds) of:
the request's wall time (it varies with when the harness's confidence interval closes), the p10
the server measured, that p10 over the interleaved reference's (what a study records), and a
fingerprint request's round trip (``GET /v1/device``, the median of 20 after each measurement:
the server's own path without the timing). The ratio of the medians, hostile over idle, is the
figure (target: within 5%); and the server process's CPU seconds over all rounds (its timing
process's not included). ``--nofile`` starts the server with that many file descriptors
(``ulimit -n``): fewer than the slow connections need, so that it evicts them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tradeoff_search.cost._device_client import DeviceBackend
from tradeoff_search.cost._harness import Setting
from tradeoff_search.cost._reference import reference_flatbuffer
from tradeoff_search.rules import TOKEN_ENV

SLOW_HEAD = b"POST /v1/measure?sizes=10 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def attack(port: int, count: int) -> None:
    """Hold ``count`` connections, one byte a second each, until standard input closes."""

    def opened() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(SLOW_HEAD)
        return sock

    held: list[socket.socket] = [opened() for _ in range(count)]
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], 1.0)[0]:
        for i, sock in enumerate(held):
            try:
                sock.sendall(b"a")
            except OSError:  # the server closed it: another one
                sock.close()
                held[i] = opened()
    for sock in held:
        sock.close()


def start_server(tmp: Path, nofile: int | None) -> tuple[subprocess.Popen[bytes], str]:
    token = tmp / "token"
    token.write_text(os.environ[TOKEN_ENV] + "\n")
    token.chmod(0o600)
    log = tmp / "server.log"
    command = [sys.executable, "-m", "tradeoff_search", "device", "serve", "--port", "0", "--token-file", str(token)]
    limit = None if nofile is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=limit)
    while not (url := next((w for w in log.read_text().split() if w.startswith("http://")), None)):
        assert server.poll() is None, log.read_text()
        time.sleep(0.1)
    return server, url


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(device: DeviceBackend, pid: int) -> dict[str, float]:
    cpu, start = cpu_seconds(pid), time.perf_counter()
    (stats,) = device.measure([reference_flatbuffer()], Setting(max_seconds=1.0))
    wall = time.perf_counter() - start
    assert stats.reference_p10_ms is not None
    fingerprints = []
    for _ in range(20):
        start = time.perf_counter()
        device.fingerprint()
        fingerprints.append(time.perf_counter() - start)
    return {"wall_s": wall, "fingerprint_ms": float(np.median(fingerprints)) * 1e3, "p10_ms": stats.p10_ms,
            "normalized": stats.p10_ms / stats.reference_p10_ms, "server_cpu_s": cpu_seconds(pid) - cpu}  # fmt: skip


def summary(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    result = {}
    for key in rounds[0]:
        values = np.array([r[key] for r in rounds])
        low, median, high = np.percentile(values, [10, 50, 90])
        result[key] = {"median": float(median), "p10": float(low), "p90": float(high)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--nofile", type=int, help="the server's file-descriptor limit (default: inherited)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/device_hostile.json"))
    parser.add_argument("--attacker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacker:
        attack(*args.attacker)
        return
    os.environ[TOKEN_ENV] = secrets.token_hex(16)
    rounds: dict[str, list[dict[str, float]]] = {"idle": [], "hostile": []}
    with tempfile.TemporaryDirectory() as name:
        server, url = start_server(Path(name), args.nofile)
        try:
            device = DeviceBackend(url, retries=0)
            one_round(device, server.pid)  # the timing process started, LiteRT loaded
            for _ in range(args.rounds):
                rounds["idle"].append(one_round(device, server.pid))
                command = [sys.executable, __file__, "--attacker", url.rsplit(":", 1)[1], str(args.slow)]
                attacker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                assert attacker.stdout is not None and attacker.stdout.readline() == b"ready\n"
                time.sleep(0.2)  # all accepted (or evicted)
                rounds["hostile"].append(one_round(device, server.pid))
                attacker.communicate(timeout=30)
        finally:
            server.terminate()
            server.wait()
    report = {condition: summary(values) for condition, values in rounds.items()}
    print(f"{args.rounds} rounds, {args.slow} slow connections held in each hostile one"
          + (f", server at ulimit -n {args.nofile}" if args.nofile else ""))  # fmt: skip
    print(f"{'':14s} {'idle median [p10, p90]':>30s} {'hostile median [p10, p90]':>30s} {'hostile/idle':>12s}")
    for key in ("wall_s", "fingerprint_ms", "p10_ms", "normalized"):
        idle, hostile = report["idle"][key], report["hostile"][key]
        cells = [f"{s['median']:.4g} [{s['p10']:.4g}, {s['p90']:.4g}]" for s in (idle, hostile)]
        ratio = hostile["median"] / idle["median"] if idle["median"] else float("nan")
        print(f"{key:14s} {cells[0]:>30s} {cells[1]:>30s} {ratio:12.3f}")
    cpu = {condition: sum(r["server_cpu_s"] for r in values) for condition, values in rounds.items()}
    print(f"server CPU over the rounds: idle {cpu['idle']:.2f} s, hostile {cpu['hostile']:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = vars(args) | {"out": str(args.out)}
    args.out.write_text(json.dumps({"settings": settings, **report, "rounds": rounds}, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
