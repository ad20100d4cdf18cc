#!/usr/bin/env python3
"""Runs wshub-bench against wshub's examples/chat.rs and every peer, side by side, and writes
the medians into BENCHMARKS.md with a chart.

Each run starts a fresh server pinned to core 0 (taskset -c 0) and the load generator pinned
to core 1 (taskset -c 1); servers alternate within each configuration, in an order rotated
from run to run, so a slow minute on the machine does not fall on one server only.

    benches/run.py --quick                 # 1k clients, one run each: a few minutes
    benches/run.py                         # the full matrix, 3 runs each, medians
    benches/run.py --only fanout-5000x50x64 --servers gorilla,node-ws,axum-broadcast

Results: the raw JSON lines go to benches/results/<section>.jsonl; the tables replace the
section between <!-- results:<section>:begin --> and <!-- results:<section>:end --> in
BENCHMARKS.md (anything else in the file is kept); the chart is benches/results/<section>.png.
Uses only the standard library; the chart needs matplotlib (benches/peers/build/venv, made by
benches/peers/build.sh) and is skipped without it.
"""

import argparse
import datetime
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ROOT / "benches"
PEER_BIN = BENCHES / "peers" / "build" / "bin"
RESULTS = BENCHES / "results"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
if not TARGET.is_absolute():
    TARGET = ROOT / TARGET
LOADGEN = TARGET / "release" / "wshub-bench"
WSHUB_CHAT = TARGET / "release" / "examples" / "chat"

SERVERS = ["wshub", "gorilla", "node-ws", "python-websockets", "axum-broadcast"]
# Not a peer, a reference: the least work per delivery through the kernel's TCP stack
# (benches/wshub-bench/src/bin/hub-floor.rs); only when asked for with --servers.
HUB_FLOOR = TARGET / "release" / "hub-floor"
PEER_BUILD_NAME = {
    "gorilla": "gorilla",
    "node-ws": "node",
    "python-websockets": "python",
    "axum-broadcast": "axum",
}
SERVER_CORE, LOADGEN_CORE = "0", "1"


def scenarios(quick):
    """(name, wshub-bench arguments, what it shows) for every configuration."""
    out = []
    sizes = [64, 1024]
    counts = [1000] if quick else [1000, 5000, 10000]
    for clients in counts:
        for size in sizes:
            out.append((
                f"fanout-{clients}x50x{size}",
                ["fanout", "--clients", str(clients), "--messages", "50", "--size", str(size)],
                f"fan-out as fast as possible, {clients} clients, 50 messages of {size} B",
            ))
    # 100k deliveries per second offered (rate × clients), latency at a fixed load.
    clients = 1000 if quick else 5000
    rate = 100_000 // clients
    out.append((
        f"fanout-{clients}-at-100k",
        ["fanout", "--clients", str(clients), "--messages", str(rate * 5), "--size", "64",
         "--rate", str(rate)],
        f"fan-out at 100k deliveries/s offered ({clients} clients × {rate} msg/s for 5 s, 64 B)",
    ))
    for clients in ([1000] if quick else [10000, 19900]):
        out.append((
            f"idle-{clients}",
            ["idle", "--clients", str(clients), "--settle", "2", "--hold", "5" if quick else "10"],
            f"{clients} idle connections",
        ))
    clients = 1000 if quick else 5000
    out.append((
        f"connect-{clients}",
        ["connect", "--clients", str(clients)],
        f"{clients} handshakes, 64 at a time",
    ))
    return out


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def capture(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                              shell=isinstance(cmd, str)).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "(unavailable)"


def build(servers):
    """Builds the load generator, examples/chat and missing peers; returns usable servers."""
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET))
    print("== cargo build --release -p wshub-bench", flush=True)
    sh(["cargo", "build", "--release", "-p", "wshub-bench"], cwd=ROOT, env=env)
    usable = []
    for server in servers:
        if server == "wshub":
            if not (ROOT / "crates" / "wshub" / "examples" / "chat.rs").exists():
                print("== skipping wshub: crates/wshub/examples/chat.rs does not exist yet",
                      flush=True)
                continue
            print("== cargo build --release -p wshub --example chat", flush=True)
            done = subprocess.run(["cargo", "build", "--release", "-p", "wshub", "--example",
                                   "chat"], cwd=ROOT, env=env)
            if done.returncode != 0:
                print("== skipping wshub: examples/chat does not build", flush=True)
                continue
        elif server == "hub-floor":
            pass  # built with wshub-bench
        elif not (PEER_BIN / server).exists():
            sh([str(BENCHES / "peers" / "build.sh"), PEER_BUILD_NAME[server]], env=env)
        usable.append(server)
    return usable


def server_command(server, addr):
    if server == "wshub":
        return [str(WSHUB_CHAT), addr]
    if server == "hub-floor":
        return [str(HUB_FLOOR), addr]
    return [str(PEER_BIN / server), addr]


def wait_listening(addr, proc, limit=15.0):
    host, port = addr.rsplit(":", 1)
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def run_one(server, scenario_args, port, log):
    """Starts `server`, runs wshub-bench once against it, returns the JSON result or None."""
    addr = f"127.0.0.1:{port}"
    cmd = ["taskset", "-c", SERVER_CORE] + server_command(server, addr)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_listening(addr, proc):
            print(f"   {server} did not start listening on {addr}", flush=True)
            return None
        time.sleep(0.3)  # let the server finish starting (JIT, imports)
        bench = ["taskset", "-c", LOADGEN_CORE, str(LOADGEN), "--url", f"ws://{addr}/ws",
                 "--server-pid", str(proc.pid), "--label", server,
                 "--deadline", "150", "--json"] + scenario_args
        loadavg = Path("/proc/loadavg").read_text().split()[0]
        done = subprocess.run(bench, capture_output=True, text=True, timeout=200)
        log.write(f"$ {shlex.join(bench)}\n{done.stdout}{done.stderr}\n".encode())
        log.flush()
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            print(f"   {server}: wshub-bench failed: {done.stderr.strip()[-300:]}", flush=True)
            return None
        result = json.loads(lines[-1])
        result["loadavg_1m"] = float(loadavg)
        shown = ["$SERVER_PID" if i > 0 and bench[i - 1] == "--server-pid" else a
                 for i, a in enumerate(bench)]
        result["command"] = " ".join(["taskset -c", LOADGEN_CORE, "wshub-bench"] + shown[4:])
        result["server_command"] = (f"taskset -c {SERVER_CORE} "
                                    f"{server_command_display(server, addr)} &  # SERVER_PID=$!")
        return result
    except subprocess.TimeoutExpired:
        print(f"   {server}: wshub-bench timed out", flush=True)
        return None
    finally:
        stop(proc)


def server_command_display(server, addr):
    return {
        "wshub": f"$CARGO_TARGET_DIR/release/examples/chat {addr}",
        "hub-floor": f"$CARGO_TARGET_DIR/release/hub-floor {addr}",
        "gorilla": f"benches/peers/build/bin/gorilla-chat -addr {addr}",
        "node-ws": f"node benches/peers/node-ws/server.js {addr}",
        "python-websockets": f"benches/peers/build/venv/bin/python "
                             f"benches/peers/python-websockets/server.py {addr}",
        "axum-broadcast": f"benches/peers/build/bin/axum-broadcast {addr}",
    }[server]


def median(rows, key):
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else None


def fmt(value, digits=0, scale=1.0):
    if value is None:
        return "–"
    value = value * scale
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def table(name, description, rows_by_server, servers):
    kind = name.split("-", 1)[0]
    lines = [f"#### {description} (`{name}`)", ""]
    if kind == "fanout":
        lines += ["| server | runs | deliveries/s | messages/frame | server CPU µs/delivery | p50 ms | p99 ms | "
                  "p99.9 ms | max ms | lost | out of order | closed | connect s | "
                  "load gen CPU s | load avg |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in servers:
            rows = rows_by_server.get(s, [])
            if not rows:
                continue
            lines.append("| " + " | ".join([
                s, str(len(rows)), fmt(median(rows, "deliveries_per_s")),
                fmt(median([dict(r, mpf=r["received"] / r["frames"]) for r in rows
                            if r.get("frames")], "mpf"), 2),
                fmt(median(rows, "server_cpu_us_per_delivery"), 2),
                fmt(median(rows, "latency_p50_ms"), 1), fmt(median(rows, "latency_p99_ms"), 1),
                fmt(median(rows, "latency_p999_ms"), 1), fmt(median(rows, "latency_max_ms"), 1),
                fmt(median(rows, "lost")), fmt(median(rows, "out_of_order")),
                fmt(median(rows, "closed")), fmt(median(rows, "connect_s"), 2),
                fmt(median(rows, "loadgen_cpu_s"), 2), fmt(median(rows, "loadavg_1m"), 2),
            ]) + " |")
    elif kind == "idle":
        lines += ["| server | runs | held | closed | server RSS per connection | server RSS | "
                  "server CPU while idle (s) | connect s | load avg |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in servers:
            rows = rows_by_server.get(s, [])
            if not rows:
                continue
            lines.append("| " + " | ".join([
                s, str(len(rows)), fmt(median(rows, "clients")), fmt(median(rows, "closed")),
                fmt(median(rows, "rss_per_conn_bytes"), 2, 1 / 1024) + " KiB",
                fmt(median(rows, "server_rss_bytes"), 1, 1 / 1048576) + " MiB",
                fmt(median(rows, "server_idle_cpu_s"), 2), fmt(median(rows, "connect_s"), 2),
                fmt(median(rows, "loadavg_1m"), 2),
            ]) + " |")
    else:
        lines += ["| server | runs | handshakes/s | p50 ms | p99 ms | max ms | failed | "
                  "server CPU µs/handshake | load avg |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in servers:
            rows = rows_by_server.get(s, [])
            if not rows:
                continue
            lines.append("| " + " | ".join([
                s, str(len(rows)), fmt(median(rows, "handshakes_per_s")),
                fmt(median(rows, "handshake_p50_ms"), 2), fmt(median(rows, "handshake_p99_ms"), 2),
                fmt(median(rows, "handshake_max_ms"), 2), fmt(median(rows, "connect_failed")),
                fmt(median(rows, "server_cpu_us_per_handshake"), 1),
                fmt(median(rows, "loadavg_1m"), 2),
            ]) + " |")
    example = next((r for s in servers for r in rows_by_server.get(s, [])), None)
    if example:
        lines += ["", "Commands of one run (from the repository root; `wshub-bench` is "
                  "`$CARGO_TARGET_DIR/release/wshub-bench`):", "", "```",
                  example["server_command"], example["command"], "```"]
    return "\n".join(lines) + "\n"


def machine():
    ws_package = BENCHES / "peers" / "node-ws" / "node_modules" / "ws" / "package.json"
    try:
        ws_version = json.loads(ws_package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        ws_version = "(not installed)"
    lscpu = capture(["lscpu"])
    keep = ("Architecture", "Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket",
            "Socket(s)", "CPU max MHz", "L2 cache", "L3 cache", "Hypervisor vendor")
    lscpu = "\n".join(l for l in lscpu.splitlines() if l.split(":")[0].strip() in keep)
    return "\n".join([
        "```",
        lscpu,
        f"kernel: {capture(['uname', '-sr'])}",
        f"memory: {capture('grep MemTotal /proc/meminfo')}",
        f"open files (hard): {capture('ulimit -Hn')}; "
        f"ephemeral ports: {capture('cat /proc/sys/net/ipv4/ip_local_port_range')}",
        f"rustc: {capture(['rustc', '-V'])}",
        f"go: {capture(['go', 'version'])}; gorilla/websocket: "
        f"{capture(['dpkg-query', '-W', '-f=${Version}', 'golang-github-gorilla-websocket-dev'])}",
        f"node: {capture(['node', '-v'])}; ws: "
        f"{ws_version}",
        f"python: {capture([str(BENCHES / 'peers/build/venv/bin/python'), '-V'])}; websockets: "
        f"{capture([str(BENCHES / 'peers/build/venv/bin/python'), '-c', 'import websockets; print(websockets.__version__)'])}",
        "```",
    ])


def chart(section, configs, results, servers):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("== no matplotlib: no chart (run benches/peers/build.sh python, then use "
              "benches/peers/build/venv/bin/python benches/run.py)", flush=True)
        return None
    fan = [name for name, _, _ in configs if name.startswith("fanout") and "-at-" not in name]
    paced = [name for name, _, _ in configs if name.startswith("fanout") and "-at-" in name]
    idle = [name for name, _, _ in configs if name.startswith("idle")]
    # (configurations, result key, title, scale, logarithmic axis)
    panels = [(fan, "deliveries_per_s", "million deliveries per second (median)", 1e-6, False),
              (fan, "server_cpu_us_per_delivery",
               "server CPU µs per delivery (median, log scale: lower is better)", 1.0, True),
              (paced, "latency_p99_ms", "p99 latency ms at a paced rate (median)", 1.0, False),
              (idle, "rss_per_conn_bytes",
               "server RSS KiB per idle connection (median, log scale: lower is better)",
               1 / 1024, True)]
    panels = [p for p in panels if p[0]]
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.6 * len(panels)))
    if len(panels) == 1:
        axes = [axes]
    for ax, (names, key, title, scale, log) in zip(axes, panels):
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        width = 0.8 / max(1, len(servers))
        for i, server in enumerate(servers):
            values = []
            for name in names:
                v = median([r for r in results if r["config"] == name and r["label"] == server],
                           key)
                values.append((v or 0) * scale)
            bars = ax.bar([x + i * width for x in range(len(names))], values, width,
                          label=server)
            ax.bar_label(bars, fmt="%.3g", fontsize=6)
        ax.set_xticks([x + width * (len(servers) - 1) / 2 for x in range(len(names))])
        ax.set_xticklabels(names, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=len(servers))
    fig.tight_layout()
    path = RESULTS / f"{section}.png"
    fig.savefig(path, dpi=90)
    return path


def write_markdown(section, title, configs, results, servers, started, out, command=None):
    command = command or shlex.join(["benches/run.py"] + sys.argv[1:])
    when = f"{started:%Y-%m-%d %H:%M} UTC" if started else "(time not recorded)"
    parts = [f"### {title}", "",
             f"Run {when} by `{command}`; raw results: `benches/results/{section}.jsonl`.", ""]
    for name, _, description in configs:
        by_server = {}
        for r in results:
            if r["config"] == name:
                by_server.setdefault(r["label"], []).append(r)
        if by_server:
            parts.append(table(name, description, by_server, servers))
    png = chart(section, configs, results, servers)
    if png:
        parts.append(f"![{title}](benches/results/{png.name})\n")
    parts += ["Machine:", "", machine(), ""]
    body = "\n".join(parts)
    begin, end = f"<!-- results:{section}:begin -->", f"<!-- results:{section}:end -->"
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    out.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1k clients, one run each")
    ap.add_argument("--runs", type=int, help="runs per server and configuration (3; quick: 1)")
    ap.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    ap.add_argument("--only", help="comma-separated configuration names (see --list)")
    ap.add_argument("--list", action="store_true", help="list configurations and exit")
    ap.add_argument("--section", help="BENCHMARKS.md section and results file name "
                                      "(default: quick or full)")
    ap.add_argument("--title", help="section heading")
    ap.add_argument("--no-build", action="store_true", help="use what is already built")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--render", action="store_true",
                    help="run nothing: rewrite the section from benches/results/SECTION.jsonl")
    args = ap.parse_args()

    configs = scenarios(args.quick)
    if args.list:
        for name, bench_args, description in configs:
            print(f"{name:28} {description}\n{'':28} wshub-bench {shlex.join(bench_args)}")
        return 0
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {name for name, _, _ in configs}
        if unknown:
            ap.error(f"unknown configurations {sorted(unknown)}; see --list")
        configs = [c for c in configs if c[0] in wanted]
    runs = args.runs or (1 if args.quick else 3)
    section = args.section or ("quick" if args.quick else "full")
    title = args.title or ("Quick comparison (1k clients, one run each)" if args.quick
                           else f"Full comparison (medians of {runs} runs)")
    servers = [s for s in args.servers.split(",") if s]
    for s in servers:
        if s not in SERVERS + ["hub-floor"]:
            ap.error(f"unknown server {s}; one of {SERVERS} or hub-floor")
    if args.render:
        raw = RESULTS / f"{section}.jsonl"
        results = [json.loads(line) for line in raw.read_text().splitlines() if line.strip()]
        names = {r["config"] for r in results}
        configs = [c for c in scenarios(args.quick) + scenarios(not args.quick) if c[0] in names]
        configs = list({c[0]: c for c in configs}.values())
        present = [s for s in servers if any(r["label"] == s for r in results)]
        command = results[0].get("run_command") if results else None
        write_markdown(section, title, configs, results, present,
                       datetime.datetime.fromisoformat(results[0]["started"])
                       if results and "started" in results[0] else None,
                       Path(args.out), command)
        print(f"== rewrote section {section} of {args.out} from {raw}")
        return 0
    if args.no_build:
        binary = {"wshub": WSHUB_CHAT, "hub-floor": HUB_FLOOR}
        servers = [s for s in servers if binary.get(s, PEER_BIN / s).exists()]
    else:
        servers = build(servers)
    if not servers:
        print("no server to run against", file=sys.stderr)
        return 1
    if not LOADGEN.exists():
        print(f"no load generator at {LOADGEN}", file=sys.stderr)
        return 1

    RESULTS.mkdir(exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    raw = RESULTS / f"{section}.jsonl"
    log_path = BENCHES / "peers" / "build" / f"run-{section}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    results = []
    port = 18100
    with raw.open("w") as raw_file, log_path.open("wb") as log:
        for run in range(runs):
            for name, bench_args, _ in configs:
                # Rotate the order each run so no server always goes first after a pause.
                shift = run % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    port = 18100 + (port - 18100 + 1) % 50
                    print(f"== run {run + 1}/{runs} {name} {server}", flush=True)
                    result = run_one(server, bench_args, port, log)
                    if result is None:
                        continue
                    result["config"] = name
                    result["run"] = run
                    result["started"] = started.isoformat()
                    result["run_command"] = shlex.join(["benches/run.py"] + sys.argv[1:])
                    results.append(result)
                    raw_file.write(json.dumps(result) + "\n")
                    raw_file.flush()
                    keys = ("deliveries_per_s", "server_cpu_us_per_delivery", "latency_p99_ms",
                            "lost", "rss_per_conn_bytes", "handshakes_per_s", "closed")
                    print("   " + ", ".join(f"{k}={result[k]:.4g}" if isinstance(result[k], float)
                                            else f"{k}={result[k]}"
                                            for k in keys if k in result), flush=True)
                    time.sleep(1)
    write_markdown(section, title, configs, results, servers, started, Path(args.out))
    print(f"== wrote {args.out} (section {section}) and {raw}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
