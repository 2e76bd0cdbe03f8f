#!/usr/bin/env python3
"""Majordomo client and worker written from 7/MDP and 18/MDP with pyzmq (libzmq),
for zmesh's broker interop tests. Prints READY once connected, then JSON lines.

  mdp_peer.py client --broker EP --service echo --msg hello [--count N] [--v2]
  mdp_peer.py worker --broker EP --service echo [--upper] [--v2 --partials 2] [--tag v1]
"""
import argparse
import json
import sys
import time

import zmq

HB_S = 0.3  # heartbeat interval the tests give the broker too
LIVENESS = 3


def client(a, ctx):
    if a.v2:
        s = ctx.socket(zmq.DEALER)
    else:
        s = ctx.socket(zmq.REQ)  # REQ adds and strips the empty frame 0
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, int(a.timeout * 1000))
    s.connect(a.broker)
    print("READY %s" % a.broker, flush=True)
    for i in range(a.count):
        body = [m.encode() for m in a.msg]
        if a.v2:
            s.send_multipart([b"MDPC02", b"\x01", a.service.encode()] + body)
            while True:
                f = s.recv_multipart()
                assert f[0] == b"MDPC02", f
                kind = {b"\x02": "partial", b"\x03": "final"}[f[1]]
                print(json.dumps({"kind": kind, "service": f[2].decode(), "body": [x.decode() for x in f[3:]]}), flush=True)
                if kind == "final":
                    break
        else:
            s.send_multipart([b"MDPC01", a.service.encode()] + body)
            f = s.recv_multipart()
            assert f[0] == b"MDPC01", f
            print(json.dumps({"kind": "final", "service": f[1].decode(), "body": [x.decode() for x in f[2:]]}), flush=True)


def worker(a, ctx):
    v2 = a.v2
    head = [b"MDPW02"] if v2 else [b"", b"MDPW01"]
    READY, REQUEST, HEARTBEAT, DISCONNECT = (b"\x01", b"\x02", b"\x05", b"\x06") if v2 else (b"\x01", b"\x02", b"\x04", b"\x05")
    REPLY = b"\x04" if v2 else b"\x03"
    PARTIAL = b"\x03"
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(a.broker)
    s.send_multipart(head + [READY, a.service.encode()])
    print("READY %s" % a.broker, flush=True)
    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN)
    next_hb = time.time() + HB_S
    liveness = LIVENESS
    handled = 0
    while handled < a.count:
        if poller.poll(HB_S * 1000):
            f = s.recv_multipart()
            liveness = LIVENESS
            f = f[1:] if not v2 else f  # drop the empty frame of v0.1
            assert f[0] == (b"MDPW02" if v2 else b"MDPW01"), f
            cmd = f[1]
            if cmd == REQUEST:
                address, body = f[2], f[4:]
                reply = [b.upper() for b in body] if a.upper else body
                if a.tag:
                    reply = [a.tag.encode()] + reply
                for p in range(a.partials):
                    s.send_multipart(head + [PARTIAL, address, b"", b"part-%d" % p])
                s.send_multipart(head + [REPLY, address, b""] + reply)
                handled += 1
                print(json.dumps({"handled": handled}), flush=True)
            elif cmd == DISCONNECT:
                print(json.dumps({"disconnected": True}), flush=True)
                return
        else:
            liveness -= 1
            if liveness == 0:
                print(json.dumps({"broker_lost": True}), flush=True)
                return
        if time.time() >= next_hb:
            s.send_multipart(head + [HEARTBEAT])
            next_hb = time.time() + HB_S
    s.send_multipart(head + [DISCONNECT])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["client", "worker"])
    p.add_argument("--broker", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--msg", action="append", default=[])
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--v2", action="store_true")
    p.add_argument("--upper", action="store_true")
    p.add_argument("--partials", type=int, default=0)
    p.add_argument("--tag")
    a = p.parse_args()
    ctx = zmq.Context()
    try:
        client(a, ctx) if a.role == "client" else worker(a, ctx)
    except zmq.Again:
        print("TIMEOUT", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
