"""A client in another language: Python grpcio, with no code of ours and no generated stubs.
Calls grpc.health.v1.Health/Check and lists services through grpc.reflection.v1, encoding the few protobuf fields
by hand. Prints one JSON line: {"health": "SERVING", "services": [...]}.
Usage: python3 health_reflection.py HOST:PORT [SERVICE]   (needs Debian's python3-grpcio)"""
import json, sys
import grpc

target = sys.argv[1]
service = sys.argv[2] if len(sys.argv) > 2 else ""
identity = lambda b: b


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]; i += 1
        result |= (b & 0x7F) << shift; shift += 7
        if not b & 0x80:
            return result, i


def fields(buf):
    """Yields (field number, wire type, value) of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i); v = buf[i:i + n]; i += n
        else:
            raise ValueError(f"unexpected wire type {wt}")
        yield num, wt, v


def string_field(num, s):
    b = s.encode()
    return varint(num << 3 | 2) + varint(len(b)) + b


with grpc.insecure_channel(target) as channel:
    grpc.channel_ready_future(channel).result(timeout=10)
    check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=identity, response_deserializer=identity)
    reply = check(string_field(1, service) if service else b"", timeout=10)
    status = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}[dict((n, v) for n, _, v in fields(reply)).get(1, 0)]

    info = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", request_serializer=identity, response_deserializer=identity)
    names = []
    for response in info(iter([string_field(7, "*")]), timeout=10):  # list_services = 7
        for num, _, value in fields(response):
            if num == 6:  # list_services_response
                for n2, _, svc in fields(value):
                    if n2 == 1:  # repeated ServiceResponse service
                        names += [v.decode() for n3, _, v in fields(svc) if n3 == 1]
        break
print(json.dumps({"health": status, "services": sorted(names)}))
