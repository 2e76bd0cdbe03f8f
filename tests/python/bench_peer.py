#!/usr/bin/env python3
"""libzmq (pyzmq) side of `scripts/bench`: the same roles and JSON output as `zmesh bench`."""
import argparse
import json
import time

import zmq

p = argparse.ArgumentParser()
p.add_argument("role", choices=["thr-recv", "thr-send", "lat-echo", "lat-req", "hs-client"])
p.add_argument("--bind")
p.add_argument("--connect")
p.add_argument("--count", type=int, default=1_000_000)
p.add_argument("--size", type=int, default=64)
p.add_argument("--curve-secret", help="CURVE server secret key (Z85)")
p.add_argument("--curve-server-key", help="CURVE server public key (Z85): be a client")
a = p.parse_args()
kind = {"thr-recv": zmq.PULL, "thr-send": zmq.PUSH, "lat-echo": zmq.REP, "lat-req": zmq.REQ, "hs-client": zmq.REQ}[a.role]
ctx = zmq.Context()


def open_socket():
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 10000 if a.role != "hs-client" else 0)
    if a.curve_secret:
        s.curve_server = True
        s.curve_secretkey = a.curve_secret.encode()
        s.curve_publickey = zmq.curve_public(a.curve_secret.encode())
    if a.curve_server_key:
        pub, sec = zmq.curve_keypair()
        s.curve_publickey, s.curve_secretkey = pub, sec
        s.curve_serverkey = a.curve_server_key.encode()
    if a.bind:
        s.bind(a.bind)
    if a.connect:
        s.connect(a.connect)
    return s


payload = b"\x5a" * a.size
if a.role == "hs-client":
    t = time.perf_counter()
    for _ in range(a.count):
        c = open_socket()
        c.send(payload)
        c.recv()
        c.close()
    print(json.dumps({"handshakes_per_s": a.count / (time.perf_counter() - t)}), flush=True)
    ctx.term()
    raise SystemExit(0)
s = open_socket()
if a.role == "thr-recv":
    s.recv(copy=False)
    t = time.perf_counter()
    for _ in range(a.count - 1):
        s.recv(copy=False)
    secs = time.perf_counter() - t
    print(json.dumps({"msgs_per_s": (a.count - 1) / secs, "secs": secs}), flush=True)
elif a.role == "thr-send":
    for _ in range(a.count):
        s.send(payload, copy=False)
elif a.role == "lat-echo":
    for _ in range(a.count):
        s.recv(copy=False)
        s.send(payload)
else:
    rtts = []
    t0 = time.perf_counter()
    for _ in range(a.count):
        t = time.perf_counter()
        s.send(payload)
        s.recv(copy=False)
        rtts.append((time.perf_counter() - t) * 1e6)
    secs = time.perf_counter() - t0
    rtts.sort()
    print(json.dumps({"p50_us": rtts[len(rtts) // 2], "p99_us": rtts[int((len(rtts) - 1) * 0.99)],
                      "req_per_s": a.count / secs}), flush=True)
s.close()
ctx.term()
