#!/usr/bin/env python3
"""Majordomo client and worker written from 7/MDP and 18/MDP with pyzmq (libzmq),
for zmesh's broker interop tests. Prints READY once connected, then JSON lines.

  mdp_peer.py client --broker EP --service echo --msg hello [--count N] [--v2]
  mdp_peer.py async-client --broker EP --service echo --count N [--pad BYTES --rcvhwm N]
  mdp_peer.py worker --broker EP --service echo [--upper] [--v2 --partials 2] [--tag v1]
"""
import argparse
import json
import signal
import sys
import time

import zmq

HB_S = 0.3  # heartbeat interval the tests give the broker too (--hb-ms changes it)
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


def async_client(a, ctx):
    """The guide's asynchronous 7/MDP client (mdcliapi2): a DEALER that sends
    every request before it reads a reply. Reports which request ids came back.
    With --hold it prints SENT after the last request and reads nothing until SIGUSR1."""
    if a.hold:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, int(a.timeout * 1000))
    if a.rcvhwm is not None:
        s.setsockopt(zmq.RCVHWM, a.rcvhwm)
    s.connect(a.broker)
    print("READY %s" % a.broker, flush=True)
    pad = b"p" * a.pad
    for i in range(a.count):
        s.send_multipart([b"", b"MDPC01", a.service.encode(), b"r%07d" % i, pad])
    if a.hold:
        print("SENT", flush=True)
        signal.sigwait({signal.SIGUSR1})
    got, errors, duplicates = set(), [], 0
    try:
        for _ in range(a.count):
            f = s.recv_multipart()
            assert f[:2] == [b"", b"MDPC01"], f[:3]
            body = f[3:]
            # The id is the frame "r" + 7 digits; workers may add frames around it.
            rid = next((x for x in body if len(x) == 8 and x.startswith(b"r") and x[1:].isdigit()), b"")
            if rid:
                i = int(rid[1:])
                duplicates += i in got
                got.add(i)
            else:
                errors.append([x.decode(errors="replace") for x in body[:2]])
    except zmq.Again:
        pass
    missing = sorted(set(range(a.count)) - got)
    print(json.dumps({"answered": len(got), "missing": len(missing), "first_missing": missing[:10],
                      "duplicates": duplicates, "errors": len(errors), "first_errors": errors[:3]}), flush=True)


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
    hb_s = a.hb_ms / 1000 if a.hb_ms else HB_S
    next_hb = time.time() + hb_s
    liveness = LIVENESS
    handled = 0
    while handled < a.count:
        if poller.poll(hb_s * 1000):
            f = s.recv_multipart()
            liveness = LIVENESS
            f = f[1:] if not v2 else f  # drop the empty frame of v0.1
            assert f[0] == (b"MDPW02" if v2 else b"MDPW01"), f
            cmd = f[1]
            if cmd == REQUEST:
                address, body = f[2], f[4:]
                # Like the reference worker: no heartbeats while it works.
                time.sleep(a.work_s)
                reply = [b.upper() for b in body] if a.upper else body
                if a.tag:
                    reply = [a.tag.encode()] + reply
                if a.reply_pad:
                    reply = reply + [b"x" * a.reply_pad]
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
            next_hb = time.time() + hb_s
    s.send_multipart(head + [DISCONNECT])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["client", "async-client", "worker"])
    p.add_argument("--broker", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--msg", action="append", default=[])
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--v2", action="store_true")
    p.add_argument("--upper", action="store_true")
    p.add_argument("--partials", type=int, default=0)
    p.add_argument("--tag")
    p.add_argument("--rcvhwm", type=int, help="async-client: receive high-water mark, in messages")
    p.add_argument("--work-s", type=float, default=0.0, help="worker: seconds each request takes, silent")
    p.add_argument("--hb-ms", type=int, help="worker: heartbeat interval, as the broker's")
    p.add_argument("--reply-pad", type=int, default=0, help="worker: add a frame of this many bytes to each reply")
    p.add_argument("--hold", action="store_true", help="async-client: read only after SIGUSR1")
    p.add_argument("--pad", type=int, default=0, help="async-client: bytes of padding per request")
    a = p.parse_args()
    ctx = zmq.Context()
    try:
        {"client": client, "async-client": async_client, "worker": worker}[a.role](a, ctx)
    except zmq.Again:
        print("TIMEOUT", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
