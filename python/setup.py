"""Builds sandbox_agent. The protocol module (sandbox_agent/agent_pb2.py and
its .pyi) is generated from proto/agent.proto by protoc at build time, so
the client always matches the checkout it is built from:

    pip install --no-build-isolation ./python

PROTOC names the compiler (default: protoc on PATH); SANDBOX_AGENT_PROTO
the schema (default: ../proto/agent.proto beside this file)."""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def find_proto():
    for p in (os.environ.get("SANDBOX_AGENT_PROTO"),
              os.path.join(HERE, "..", "proto", "agent.proto"),
              os.path.join(HERE, "proto", "agent.proto")):
        if p and os.path.isfile(p):
            return os.path.abspath(p)
    raise SystemExit("sandbox_agent: proto/agent.proto not found; set SANDBOX_AGENT_PROTO")


def compile_proto(out_dir):
    proto = find_proto()
    protoc = os.environ.get("PROTOC") or shutil.which("protoc")
    if not protoc:
        raise SystemExit("sandbox_agent: protoc not found (Debian: apt-get install protobuf-compiler)")
    os.makedirs(out_dir, exist_ok=True)
    cmd = [protoc, "-I" + os.path.dirname(proto), "--python_out=" + out_dir, proto]
    # Type stubs where this protoc can write them (3.20 and later).
    if subprocess.call(cmd[:-1] + ["--pyi_out=" + out_dir, proto]) != 0:
        subprocess.check_call(cmd)


class BuildPyWithProto(build_py):
    def run(self):
        super().run()
        compile_proto(os.path.join(self.build_lib, "sandbox_agent"))


setup(cmdclass={"build_py": BuildPyWithProto})
