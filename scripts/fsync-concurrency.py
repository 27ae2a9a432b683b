#!/usr/bin/env python3
# Usage: scripts/fsync-concurrency.py FILE THREADS [SECONDS]  (the file is created, 64 MiB, then removed)
# Raw fdatasync concurrency on one preallocated file: T threads, each writes its own 4 KiB block then fdatasync.
import os, sys, threading, time
path = sys.argv[1]; T = int(sys.argv[2]); dur = float(sys.argv[3]) if len(sys.argv) > 3 else 3
size = 64 << 20
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
os.pwrite(fd, b"\0" * size, 0); os.fsync(fd)
count = [0] * T; lat = [[] for _ in range(T)]
stop = time.time() + dur
def run(i):
    blk = os.urandom(4096); pos = i * 4096
    while time.time() < stop:
        t0 = time.perf_counter()
        os.pwrite(fd, blk, pos % size); os.fdatasync(fd)
        lat[i].append(time.perf_counter() - t0)
        count[i] += 1; pos += T * 4096
ths = [threading.Thread(target=run, args=(i,)) for i in range(T)]
[t.start() for t in ths]; [t.join() for t in ths]
l = sorted(x for ll in lat for x in ll)
print(f"threads={T} syncs/s={sum(count)/dur:.0f} p50={l[len(l)//2]*1e6:.0f}us p99={l[int(len(l)*.99)]*1e6:.0f}us")
os.close(fd); os.unlink(path)
