#!/usr/bin/env python3
"""A large copy killed at half, the source changed, then resumed: what moves on the wire.

N files of 1 KiB (random bytes: nothing compresses) are copied local -> local through agents.
When half the objects are done (`--stats`), the whole process group (gateway and agents) is
killed with SIGKILL. Then one file is added and one file the first run had completed is
rewritten (same size, other bytes), and `skyx cp --resume` runs. Reports the objects and the
bytes each run moved and put on the wire, against what only the remaining, added and changed
objects would need; checks the destination (every file present, the changed one new, a sample
of 2,000 byte for byte). Measures; asserts only that the destination is right.
"""
import argparse, json, os, platform, random, shutil, signal, subprocess, sys, tempfile, time

SIZE = 1024

def path_of(root, i):
    return f"{root}/d{i // 1000:04}/f{i:07}"

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skyx", required=True)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    n, skyx = a.files, a.skyx
    work = tempfile.mkdtemp(prefix="skyx-resume-")
    src, dst = f"{work}/src", f"{work}/dst"
    t0 = time.monotonic()
    for i in range(n):
        if i % 1000 == 0:
            os.makedirs(f"{src}/d{i // 1000:04}", exist_ok=True)
        with open(path_of(src, i), "wb") as f:
            f.write(os.urandom(SIZE))
    made = time.monotonic() - t0
    env = dict(os.environ, SKYX_STATE_DIR=f"{work}/state")
    env.pop("SKYX_SKY", None)
    base = [skyx, "cp", "-r", src, dst, "--json", "--no-progress"]
    # Run 1, killed once half the objects are done.
    first = subprocess.Popen(base + ["--stats", "0.2s"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    done_at_kill = 0
    t1 = time.monotonic()
    for line in first.stderr:
        if line.startswith("skyx: stats"):
            fields = dict(f.split("=", 1) for f in line.split()[2:] if "=" in f)
            done_at_kill = int(fields["objects"].split("/")[0])
            if done_at_kill >= n // 2:
                os.killpg(first.pid, signal.SIGKILL)
                break
    first.wait()
    killed_after = time.monotonic() - t1
    if done_at_kill < n // 2:
        sys.exit(f"the first run ended before half ({done_at_kill} of {n}): nothing to resume")
    # The source changes: one file added, one the first run completed rewritten.
    with open(f"{src}/added", "wb") as f:
        f.write(os.urandom(SIZE))
    # A file the first run completed: one already at the destination (files land whole, by
    # rename).
    rel = next(os.path.relpath(os.path.join(d, fs[0]), dst) for d, _, fs in os.walk(dst)
               if fs and not fs[0].startswith("."))
    changed = f"{src}/{rel}"
    new_bytes = os.urandom(SIZE)
    time.sleep(0.01)
    with open(changed, "wb") as f:
        f.write(new_bytes)
    t2 = time.monotonic()
    p = subprocess.run(base + ["--resume"], env=env, capture_output=True, text=True)
    resumed_wall = time.monotonic() - t2
    if p.returncode != 0:
        sys.exit(f"the resume failed ({p.returncode}): {p.stderr[-3000:]}")
    r = json.loads(p.stdout)
    wire = sum(h["wire_bytes"] for h in r["hops"])
    # The destination: everything there, the changed file new, a sample byte for byte.
    got = sum(len(files) for _, _, files in os.walk(dst))
    if got != n + 1:
        sys.exit(f"{got} of {n + 1} files at the destination")
    with open(f"{dst}/{rel}", "rb") as f:
        if f.read() != new_bytes:
            sys.exit("the changed file is not its new version at the destination")
    for i in random.Random(7).sample(range(n), min(2000, n)):
        with open(path_of(src, i), "rb") as s, open(path_of(dst, i), "rb") as d:
            if s.read() != d.read():
                sys.exit(f"{path_of(dst, i)} differs from its source")
    # Everything listed but what the first run completed: the remaining, added and changed.
    remaining = r["objects_total"] - r["objects_resumed"]
    need = remaining * SIZE
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    out = f"""# A {n:,}-object copy killed at half, the source changed, resumed

Machine: {os.cpu_count()} vCPU ({cpu}), {platform.platform()}. Date: {time.strftime('%Y-%m-%d %H:%M')}.
Files of {SIZE} random bytes, local -> local through a source and a sink agent (loopback TCP).
Creating them took {made:.0f} s.

1. `{' '.join(base)} --stats 0.2s`: SIGKILL to the gateway and its agents (the whole process
   group) once {done_at_kill:,} of {n:,} objects were done, {killed_after:.1f} s in.
2. The source changed: one file added (`added`), one the first run had completed rewritten
   (`{rel}`, same size, other bytes).
3. `{' '.join(base)} --resume`: {resumed_wall:.1f} s.

| figure | value |
|---|---|
| objects listed by the resume | {r['objects_total']:,} |
| taken over as complete from the first run (`objects_resumed`) | {r['objects_resumed']:,} |
| copied by the resume (`objects_copied`) | {r['objects_copied']:,} |
| of which the added and the changed file | 2 |
| raw bytes the resume's sources sent | {r['bytes_sent']:,} |
| bytes on the wire (every hop) | {wire:,} |
| what the remaining, added and changed objects need ({remaining:,} × {SIZE} B) | {need:,} |
| raw bytes sent / that need | {r['bytes_sent'] / need:.3f} |
| wire bytes / that need (frame headers: 56 B per chunk) | {wire / need:.3f} |
| failed | {len(r['objects_failed'])} |

The destination holds {n + 1:,} files, the changed file is its new version, and a sample of
2,000 files matches its source byte for byte.
"""
    open(a.out, "w").write(out)
    print(out)
    shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
