#!/usr/bin/env python3
"""Steady open-loop-ish load for the benchmarks: RATE requests/s in total, spread over
THREADS keep-alive connections, for DURATION seconds (bounded), against one URL on loopback.
Writes one line per request to OUT: `<unix time of send> <status or 0 for a connection error>`.
"""
import http.client
import sys
import threading
import time
import urllib.parse


def worker(url, rate, duration, out, lock):
    u = urllib.parse.urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    conn = None
    interval = 1.0 / rate
    start = time.monotonic()
    next_at = start
    lines = []
    while True:
        now = time.monotonic()
        if now - start >= duration:
            break
        if now < next_at:
            time.sleep(next_at - now)
        next_at += interval
        sent = time.time()
        status = 0
        try:
            if conn is None:
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            conn.request("GET", path, headers={"Host": "localhost"})
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except Exception:
            conn = None
        lines.append(f"{sent:.6f} {status}\n")
    with lock:
        out.writelines(lines)


def main():
    url, rate, threads, duration, out_path = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    lock = threading.Lock()
    with open(out_path, "w") as out:
        ts = [threading.Thread(target=worker, args=(url, rate / threads, duration, out, lock)) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()


if __name__ == "__main__":
    main()
