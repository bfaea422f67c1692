#!/usr/bin/env python3
"""Runs `skyx cp` of N synthetic objects through a relay and samples memory as it goes.

Every 0.5 s: the gateway's resident memory (the `skyx` process), each agent's (its children),
and the objects done (from `--stats` lines). Writes scale.md (machine, commands, figures),
scale.json (every sample) and scale.svg (memory against objects done). Measures; asserts
nothing.
"""
import argparse, json, os, platform, re, subprocess, sys, tempfile, threading, time

def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == pid:
                out.append(int(d))
    return out

def run_sampled(cmd, env):
    """Runs cmd, sampling memory; returns (stdout, samples, first_landing_s, wall_s)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stats = {"objects": 0, "bytes": 0, "first": None}
    errors = []
    def read_stderr():
        for line in p.stderr:
            m = re.search(r"objects=(\d+)/\d+ bytes=(\d+)/", line)
            if m:
                stats["objects"], stats["bytes"] = int(m.group(1)), int(m.group(2))
                if stats["bytes"] > 0 and stats["first"] is None:
                    stats["first"] = time.monotonic() - t0
            else:
                errors.append(line)
    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    out = []
    def read_stdout():
        out.append(p.stdout.read())
    outr = threading.Thread(target=read_stdout, daemon=True)
    outr.start()
    samples = []
    agents_seen = {}
    while p.poll() is None:
        kids = children(p.pid)
        for k in kids:
            agents_seen[k] = max(agents_seen.get(k, 0), rss_kib(k))
        samples.append({
            "t": round(time.monotonic() - t0, 2),
            "objects": stats["objects"],
            "gateway_kib": rss_kib(p.pid),
            "agents_kib": [rss_kib(k) for k in kids],
        })
        time.sleep(0.5)
    wall = time.monotonic() - t0
    reader.join(5)
    outr.join(5)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{''.join(errors[-20:])}")
    return out[0], samples, stats["first"], wall

def svg(samples, path, n):
    w, h, m = 720, 360, 50
    top = max([s["gateway_kib"] for s in samples] + [max(s["agents_kib"] or [0]) for s in samples]) / 1024 or 1
    top = max(top * 1.15, 64)
    def xy(o, mib):
        return m + (w - 2 * m) * o / max(n, 1), h - m - (h - 2 * m) * mib / top
    def line(key, colour):
        pts = []
        for s in samples:
            v = s["gateway_kib"] if key == "gateway" else max(s["agents_kib"] or [0])
            pts.append("%.1f,%.1f" % xy(s["objects"], v / 1024))
        return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(pts)}"/>'
    ticks = "".join(
        f'<text x="{m - 6}" y="{xy(0, v)[1] + 4:.0f}" text-anchor="end" font-size="11">{v:.0f}</text>'
        for v in [top * k / 4 for k in range(5)])
    xt = "".join(
        f'<text x="{xy(n * k / 4, 0)[0]:.0f}" y="{h - m + 16}" text-anchor="middle" font-size="11">{int(n * k / 4):,}</text>'
        for k in range(5))
    open(path, "w").write(f'''<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{w/2}" y="20" text-anchor="middle" font-size="14">Resident memory against objects copied ({n:,} objects of 1 KiB, through a relay)</text>
<line x1="{m}" y1="{h-m}" x2="{w-m}" y2="{h-m}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{h-m}" stroke="black"/>
{ticks}{xt}
<text x="14" y="{h/2}" transform="rotate(-90 14 {h/2})" text-anchor="middle" font-size="12">MiB</text>
<text x="{w/2}" y="{h-10}" text-anchor="middle" font-size="12">objects copied</text>
{line("gateway", "#1f77b4")}{line("agent", "#d62728")}
<text x="{w-m-150}" y="{m+10}" font-size="12" fill="#1f77b4">gateway (skyx)</text>
<text x="{w-m-150}" y="{m+26}" font-size="12" fill="#d62728">largest agent</text>
</svg>''')

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skyx", required=True)
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    n = a.objects
    state = tempfile.mkdtemp(prefix="skyx-scale-")
    env = dict(os.environ, SKYX_STATE_DIR=state)
    url = f"synthetic://{n}x1024/"
    cp = [a.skyx, "cp", "-r", url, url, "--rehearse", "--src-region", "aws:us-east-1", "--dst-region",
          "gcp:asia-southeast1", "--via", "aws:us-east-2", "--max-vms-per-region", "1",
          "--json", "--no-progress", "--stats", "0.5s"]
    out, samples, first, wall = run_sampled(cp, env)
    report = json.loads(out)
    sync = [a.skyx, "sync", url, url, "--dry-run", "--json", "--no-progress"]
    _, sync_samples, _, sync_wall = run_sampled(sync, env)
    gw_peak = max(s["gateway_kib"] for s in samples) / 1024
    agent_peak = max(max(s["agents_kib"] or [0]) for s in samples) / 1024
    sync_peak = max(s["gateway_kib"] for s in sync_samples) / 1024
    def at(frac):
        target = n * frac
        s = next((s for s in samples if s["objects"] >= target), samples[-1])
        return s["gateway_kib"] / 1024, max(s["agents_kib"] or [0]) / 1024
    os.makedirs(a.out, exist_ok=True)
    json.dump({"objects": n, "cp": cp, "report": report, "samples": samples, "sync": sync,
               "sync_samples": sync_samples, "first_landing_s": first, "wall_s": wall,
               "sync_wall_s": sync_wall}, open(f"{a.out}/scale.json", "w"))
    svg(samples, f"{a.out}/scale.svg", n)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    rows = "\n".join(
        f"| {int(f*100)}% | {g:.0f} | {ag:.0f} |" for f in (0.1, 0.25, 0.5, 0.75, 0.9) for g, ag in [at(f)])
    md = f"""# {n:,} objects through a relay from the synthetic device

Machine: {os.cpu_count()} vCPU ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, {platform.platform()}.
Date: {time.strftime('%Y-%m-%d %H:%M')}. Every process (gateway, three agents) shares these cores.

Command: `{' '.join(cp)}`

`synthetic://` is a benchmark device, not a store: it lists and serves deterministic objects
without storing them and, as the destination, checks every byte against what it served and
discards it (see `store/src/synthetic.rs`).

| figure | value |
|---|---|
| objects copied | {report['objects_copied']:,} of {report['objects_total']:,} (failed: {len(report['objects_failed'])}) |
| wall time | {wall:.1f} s ({report['objects_copied'] / wall:,.0f} objects/s) |
| first landing after the command started | {first if first is None else round(first, 2)} s |
| gateway peak resident memory | {gw_peak:.0f} MiB |
| largest agent's peak resident memory | {agent_peak:.0f} MiB (agents report {max(x['peak_rss_bytes'] for x in report['agents']) / 2**20:.0f} MiB) |
| objects the gateway held at once | {report['objects_held_peak']:,} |
| objects a sink held at once | {max(x['objects_held_peak'] for x in report['agents']):,} |
| verified | {report['verified']} |

Memory as the copy goes (MiB; the curve is scale.svg):

| objects done | gateway | largest agent |
|---|---|---|
{rows}

`{' '.join(sync)}`: {sync_wall:.1f} s, peak resident memory {sync_peak:.0f} MiB.
"""
    open(f"{a.out}/scale.md", "w").write(md)
    print(md)

if __name__ == "__main__":
    main()
