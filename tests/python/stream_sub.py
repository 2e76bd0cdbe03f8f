#!/usr/bin/env python3
"""A ZMST01 stream subscriber written from docs/protocol/streams.md with pyzmq,
for the broker's slow-reader tests. It publishes --count messages of --size
bytes, subscribes from the first with credit for all of them on a DEALER that
queues only --rcvhwm, prints SUBSCRIBED, reads nothing until SIGUSR1, then
reads every MSG and prints one JSON line: which seqs arrived, and any dseq gap.

  stream_sub.py --broker EP --stream S --count N --size BYTES [--rcvhwm 10]
"""
import argparse
import json
import signal
import sys

import zmq

HEAD = [b"", b"ZMST01"]


def request(s, frames):
    s.send_multipart(HEAD + frames)
    r = s.recv_multipart()
    assert r[:2] == HEAD, r[:3]
    return r[2:]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--broker", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--rcvhwm", type=int, default=10)
    p.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    ctx = zmq.Context()
    pub = ctx.socket(zmq.DEALER)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.RCVTIMEO, int(a.timeout * 1000))
    pub.connect(a.broker)
    print("READY %s" % a.broker, flush=True)
    r = request(pub, [b"CREATE", b"c", a.stream.encode()])
    assert r[0] == b"OK", r
    body = b"b" * a.size
    # A window of publishes in flight, then one STORED per publish.
    window, sent, stored = 100, 0, set()
    while len(stored) < a.count:
        while sent < a.count and sent - len(stored) < window:
            pub.send_multipart(HEAD + [b"PUBLISH", b"p%d" % sent, a.stream.encode(), b"s.x", body])
            sent += 1
        r = pub.recv_multipart()
        assert r[2] == b"STORED", r[:5]
        stored.add(int(r[4]))

    sub = ctx.socket(zmq.DEALER)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, a.rcvhwm)
    sub.setsockopt(zmq.RCVTIMEO, int(a.timeout * 1000))
    sub.connect(a.broker)
    sub.send_multipart(HEAD + [b"SUBSCRIBE", b"s", a.stream.encode(), b"sub1", b">", b"first", b"%d" % a.count])
    r = sub.recv_multipart()
    assert r[2] == b"OK", r
    print("SUBSCRIBED", flush=True)
    signal.sigwait({signal.SIGUSR1})
    got, gaps, last_dseq = set(), [], 0
    try:
        while len(got) < a.count:
            f = sub.recv_multipart()
            if f[2] == b"HEARTBEAT":
                continue
            assert f[2] == b"MSG", f[:4]
            seq, dseq = int(f[4]), int(f[5])
            if dseq != last_dseq + 1:
                gaps.append([last_dseq, dseq])
            last_dseq = dseq
            got.add(seq)
    except zmq.Again:
        pass
    missing = sorted(stored - got)
    print(json.dumps({"received": len(got), "missing": len(missing), "first_missing": missing[:10],
                      "gaps": gaps[:10]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
