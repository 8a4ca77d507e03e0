#!/usr/bin/env python3
"""qopt-server's standard gRPC services: health checking (grpc.health.v1) answers SERVING
and server reflection (grpc.reflection.v1alpha) lists and describes qopt.v1's services.

Debian ships no Python package for either protocol, so the messages come from the
minimal wire-compatible definitions in tests/service/proto/, compiled by protoc into a
temporary folder; calls go through grpc's generic channel methods, so only --python_out
is needed.

    health_reflection_test.py --server HOST:PORT [--protoc PATH]
"""
import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

import grpc
from google.protobuf import descriptor_pb2

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proto")
QOPT_SERVICES = ["qopt.v1.JobService", "qopt.v1.BlobService", "qopt.v1.ModelService",
                 "qopt.v1.DatasetService", "qopt.v1.WorkerService"]
TIMEOUT_S = 10


def compile_protos(protoc, out_dir):
    subprocess.run([protoc, "-I", PROTO_DIR, f"--python_out={out_dir}",
                    "health.proto", "reflection.proto"], check=True, cwd=PROTO_DIR)
    sys.path.insert(0, out_dir)
    return importlib.import_module("health_pb2"), importlib.import_module("reflection_pb2")


def check_health(channel, health_pb2):
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString)
    response = check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    assert response.status == health_pb2.HealthCheckResponse.SERVING, f"Check(\"\") is {status}"
    print(f"ok   health: Check(\"\") = {status}")


def reflect(channel, reflection_pb2, requests):
    """Sends the requests on one ServerReflectionInfo stream; returns the responses."""
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    responses = list(info(iter(requests), timeout=TIMEOUT_S))
    assert len(responses) == len(requests), f"{len(requests)} requests, {len(responses)} responses"
    for response in responses:
        assert not response.HasField("error_response"), response.error_response
    return responses


def check_reflection(channel, reflection_pb2):
    Request = reflection_pb2.ServerReflectionRequest
    listed, described = reflect(channel, reflection_pb2, [
        Request(list_services=""), Request(file_containing_symbol="qopt.v1.JobService")])
    names = sorted(s.name for s in listed.list_services_response.service)
    missing = [s for s in QOPT_SERVICES if s not in names]
    assert not missing, f"reflection lists {names}, without {missing}"
    print(f"ok   reflection: list_services = {', '.join(names)}")

    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in described.file_descriptor_response.file_descriptor_proto]
    service = next((s for f in files if f.package == "qopt.v1" for s in f.service
                    if s.name == "JobService"), None)
    assert service is not None, f"no JobService in {[f.name for f in files]}"
    methods = {m.name for m in service.method}
    assert {"SubmitJob", "WatchJob", "DownloadArtifact"} <= methods, methods
    print(f"ok   reflection: qopt.v1.JobService described by {files[0].name} "
          f"({len(methods)} methods)")


def main():
    p = argparse.ArgumentParser(description="qopt-server health checking and reflection")
    p.add_argument("--server", default=os.environ.get("QOPT_SERVER"), help="HOST:PORT")
    p.add_argument("--protoc", default=shutil.which("protoc"),
                   help="protoc to compile the test protos")
    args = p.parse_args()
    if not args.server or not args.protoc:
        p.error("--server (or QOPT_SERVER) and protoc are needed")
    with tempfile.TemporaryDirectory() as out_dir:
        health_pb2, reflection_pb2 = compile_protos(args.protoc, out_dir)
        with grpc.insecure_channel(args.server) as channel:
            try:
                check_health(channel, health_pb2)
                check_reflection(channel, reflection_pb2)
            except (AssertionError, grpc.RpcError) as error:
                print(f"FAIL {error}")
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
