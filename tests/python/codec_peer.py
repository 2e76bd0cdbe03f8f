#!/usr/bin/env python3
"""Codec interop peer: a REP that decodes [format, payload] with Python's own
libraries, bumps `id` by one and answers in the same format.

Job is built from a descriptor at run time (no protoc), matching
proto/zmesh_demo.proto."""
import json
import sys

import msgpack
import zmq
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def job_class():
    fdp = descriptor_pb2.FileDescriptorProto(name="zmesh_demo.proto", package="zmesh.demo", syntax="proto3")
    m = fdp.message_type.add(name="Job")
    F = descriptor_pb2.FieldDescriptorProto
    m.field.add(name="id", number=1, type=F.TYPE_UINT64, label=F.LABEL_OPTIONAL)
    m.field.add(name="kind", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    m.field.add(name="payload", number=3, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    m.field.add(name="tags", number=4, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("zmesh.demo.Job"))


def main():
    Job = job_class()
    ctx = zmq.Context()
    s = ctx.socket(zmq.REP)
    s.setsockopt(zmq.RCVTIMEO, 15000)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    print("READY tcp://127.0.0.1:%d" % port, flush=True)
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
        fmt, payload = s.recv_multipart()
        if fmt == b"json":
            v = json.loads(payload)
            v["id"] += 1
            out = json.dumps(v).encode()
        elif fmt == b"msgpack":
            v = msgpack.unpackb(payload, raw=False)
            v["id"] += 1
            out = msgpack.packb(v, use_bin_type=True)
        else:
            j = Job()
            j.ParseFromString(payload)
            j.id += 1
            j.tags.append("python")
            out = j.SerializeToString()
        s.send_multipart([fmt, out])
        print(json.dumps({"format": fmt.decode()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
