"""Turns relay-load's JSON lines (labels "SCENARIO:SERVER:RUN") into the benchmark tables.

Each cell shows the median of its runs, except loss, connect failures and closes by the server,
which show the worst run. Then each target of issue 4 with ours' figure and a verdict.

Usage: python3 report.py target/bench/results-DATE.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict

SCENARIOS = {
    "a": "10 watchers × 100 KB × 60/s",
    "b": "200 watchers × 10 KB × 60/s",
    "c": "1000 watchers × 1 KB × 30/s",
    "d": "10 watchers × 64 KiB, as fast as possible",
    "e": "1000 watchers × 100 B, as fast as possible",
    "f": "10 000 idle watchers",
}
SERVERS = ["ours", "tokio", "node", "tornado", "limit"]
NAMES = {
    "ours": "camrelay (ours)",
    "tokio": "tokio-tungstenite 4 KiB",
    "node": "Node ws",
    "tornado": "Tornado",
    "limit": "minimal writer (limit)",
}
PEERS = ["tokio", "node", "tornado"]
WORST = {"lost", "connect_failures", "closed_by_server"}


def load(path):
    runs = defaultdict(list)
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            scenario, server, _run = r["label"].split(":")
            runs[(scenario, server)].append(r)
    return runs


def summary(rows):
    """Median of each numeric key over the runs (worst for loss-like keys); None when absent."""
    out = {"runs": len(rows)}
    for key in rows[0]:
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
        if not values:
            out[key] = None
        elif key in WORST:
            out[key] = max(values)
        else:
            out[key] = statistics.median(values)
    return out


def fmt(v, digits=1):
    if v is None:
        return "–"
    if abs(v) >= 1000 and digits <= 1:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(v, base):
    if v is None or not base:
        return "–"
    return f"{v / base:.2f}×"


def table(scenario, cells):
    lines = [f"### ({scenario}) {SCENARIOS[scenario]}", ""]
    ours = cells.get("ours")
    if scenario == "f":
        lines += [
            "| server | watchers held | RSS per idle watcher (bytes) | server RSS (MB) | vs ours |",
            "|---|---:|---:|---:|---:|",
        ]
        base = ours and ours["idle_rss_per_conn_bytes"]
        for s in SERVERS:
            c = cells.get(s)
            if not c:
                continue
            held = c["watchers"] - (c["connect_failures"] or 0) if c["watchers"] is not None else None
            lines.append(
                f"| {NAMES[s]} | {fmt(held, 0)} | {fmt(c['idle_rss_per_conn_bytes'], 0)} "
                f"| {fmt(kb_to_mb(c['server_rss_kb']))} | {ratio(c['idle_rss_per_conn_bytes'], base)} |"
            )
        return lines
    lines += [
        "| server | delivered MB/s | msgs/s | lost | p50 ms | p99 ms | CPU-s per 1M msgs | peak RSS MB "
        "| MB/s vs ours | CPU/msg vs ours |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in SERVERS:
        c = cells.get(s)
        if not c:
            continue
        lost = fmt(c["lost"], 0)
        if c["connect_failures"] or c["closed_by_server"]:
            lost += f" ({fmt(c['connect_failures'], 0)} conn. failed, {fmt(c['closed_by_server'], 0)} closed)"
        lines.append(
            f"| {NAMES[s]} | {fmt(c['delivered_mb_s'])} | {fmt(c['msgs_per_s'], 0)} | {lost} "
            f"| {fmt(us_to_ms(c['lat_p50_us']), 2)} | {fmt(us_to_ms(c['lat_p99_us']), 2)} "
            f"| {fmt(c['cpu_us_per_msg'], 2)} | {fmt(kb_to_mb(c['server_peak_rss_kb']))} "
            f"| {ratio(c['delivered_mb_s'], ours and ours['delivered_mb_s'])} "
            f"| {ratio(c['cpu_us_per_msg'], ours and ours['cpu_us_per_msg'])} |"
        )
    return lines


def us_to_ms(v):
    return None if v is None else v / 1000


def kb_to_mb(v):
    return None if v is None else v / 1024


def best_peer(cells, key, lowest):
    found = [(cells[p][key], p) for p in PEERS if p in cells and cells[p][key] is not None]
    if not found:
        return None, None
    return (min if lowest else max)(found)


def verdict(ok):
    return "**met**" if ok else "**not met**"


def targets(all_cells):
    lines = ["### Targets (issue 4)", ""]

    def ours(scenario, key):
        c = all_cells.get(scenario, {}).get("ours")
        return c and c[key]

    for scenario, bound in [("a", 1 / 2), ("b", 1 / 3), ("c", 1 / 3), ("e", 1 / 3)]:
        mine = ours(scenario, "cpu_us_per_msg")
        best, who = best_peer(all_cells.get(scenario, {}), "cpu_us_per_msg", lowest=True)
        if mine is None or best is None:
            continue
        lines.append(
            f"- CPU per delivered message ({scenario}): ours {mine:.2f} µs, best peer {NAMES[who]} {best:.2f} µs: "
            f"{mine / best:.2f}× (target ≤ {bound:.2f}×) {verdict(mine <= bound * best)}"
        )
    mine = ours("d", "delivered_mb_s")
    best, who = best_peer(all_cells.get("d", {}), "delivered_mb_s", lowest=False)
    if mine is not None and best is not None:
        lines.append(
            f"- Throughput (d): ours {mine:,.0f} MB/s, best peer {NAMES[who]} {best:,.0f} MB/s: "
            f"{mine / best:.2f}× (target ≥ 1.3×) {verdict(mine >= 1.3 * best)}"
        )
    limit = all_cells.get("d", {}).get("limit")
    if mine is not None and limit and limit["delivered_mb_s"]:
        lines.append(
            f"- Throughput (d) vs the minimal writer: ours {mine:,.0f} MB/s, limit {limit['delivered_mb_s']:,.0f} "
            f"MB/s: {mine / limit['delivered_mb_s']:.0%} (target ≥ 80%) "
            f"{verdict(mine >= 0.8 * limit['delivered_mb_s'])}"
        )
    for scenario in "abc":
        cells = all_cells.get(scenario, {})
        mine = ours(scenario, "lat_p99_us")
        if mine is None:
            continue
        peers = {p: cells[p]["lat_p99_us"] for p in PEERS if p in cells and cells[p]["lat_p99_us"] is not None}
        beaten = all(mine < v for v in peers.values())
        peer_text = ", ".join(f"{p} {v / 1000:.2f}" for p, v in peers.items()) or "no peer measured"
        lines.append(
            f"- Latency p99 ({scenario}): ours {mine / 1000:.2f} ms (peers: {peer_text} ms); target < 5 ms "
            f"{verdict(mine < 5000)}, lower than every peer {verdict(beaten)}"
        )
    mine = ours("f", "idle_rss_per_conn_bytes")
    if mine is not None:
        lines.append(f"- Memory (f): ours {mine:,.0f} bytes per idle watcher (target < 10 240) {verdict(mine < 10240)}")
    losses = {s: all_cells[s]["ours"] for s in "abcde" if "ours" in all_cells.get(s, {})}
    if losses:
        text = ", ".join(
            f"({s}) {c['lost']:.0f} lost, {c['connect_failures'] or 0:.0f} connect failures, "
            f"{c['closed_by_server'] or 0:.0f} closed"
            for s, c in losses.items()
        )
        clean = all(not (c["lost"] or c["connect_failures"] or c["closed_by_server"]) for c in losses.values())
        lines.append(f"- No loss (worst run): ours {text} {verdict(clean)}")
    return lines


def main(path):
    runs = load(path)
    all_cells = defaultdict(dict)
    for (scenario, server), rows in runs.items():
        all_cells[scenario][server] = summary(rows)
    out = []
    for scenario in SCENARIOS:
        if scenario in all_cells:
            n = max(c["runs"] for c in all_cells[scenario].values())
            out += table(scenario, all_cells[scenario])
            out += ["", f"Median of {n} run{'s' if n > 1 else ''} per server; lost: the worst run.", ""]
    out += targets(all_cells)
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
