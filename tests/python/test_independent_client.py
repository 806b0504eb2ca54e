#!/usr/bin/python3
"""An independent client: Python's protobuf library, proto/agent.proto and
docs/PROTOCOL.md, nothing of the C code. If this passes, a control plane in
another language can talk to the agent from the documentation alone."""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

AGENT = os.environ["AGENT_BIN"]
PROTO_DIR = os.environ["PROTO_DIR"]
PROTOC = os.environ.get("PROTOC", "protoc")
PY_OUT = os.environ.get("PY_OUT") or tempfile.mkdtemp()

os.makedirs(PY_OUT, exist_ok=True)
subprocess.check_call([PROTOC, "-I" + PROTO_DIR, "--python_out=" + PY_OUT,
                       os.path.join(PROTO_DIR, "agent.proto")])
sys.path.insert(0, PY_OUT)
import agent_pb2 as pb  # noqa: E402


class Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.s.settimeout(20)
        self.buf = b""

    def send(self, req, compress=False):
        data = req.SerializeToString()
        flags = 0
        if compress:
            data = zlib.compress(data)
            flags = 1
        self.s.sendall(struct.pack(">BI", flags, len(data)) + data)

    def send_raw(self, b):
        self.s.sendall(b)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        flags, n = struct.unpack(">BI", self._read(5))
        assert flags & ~1 == 0, "agent sent unknown flag bits"
        data = self._read(n)
        if flags & 1:
            data = zlib.decompress(data)
        r = pb.Response()
        r.ParseFromString(data)
        return r, flags

    def call(self, req):
        self.send(req)
        while True:
            r, _ = self.recv()
            if r.id == req.id and r.done:
                return r


def start_agent(tmp, *extra):
    sock = os.path.join(tmp, "agent.sock")
    r, w = os.pipe()
    p = subprocess.Popen([AGENT, "--listen", "unix:" + sock, "--ready-fd", str(w)] + list(extra),
                         pass_fds=(w,), stderr=open(os.path.join(tmp, "agent.log"), "w"))
    os.close(w)
    assert os.read(r, 16), "agent did not become ready"
    os.close(r)
    return p, sock


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok  ", what)


def echo_server():
    """A TCP echo server on 127.0.0.1 in a thread; returns its port."""
    import threading
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def serve(conn):
        while True:
            b = conn.recv(65536)
            if not b:
                break
            conn.sendall(b)
        conn.close()

    def accept_loop():
        while True:
            conn, _ = ls.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return ls.getsockname()[1]


def tunnels(sock):
    port = echo_server()
    target = "tcp:127.0.0.1:%d" % port
    c = Client(sock)
    # Multiplexed: TunnelSend and TunnelWindow carry the tunnel's id.
    c.send(pb.Request(id=7, open_tunnel=pb.OpenTunnel(target=target, window=4096)))
    r, _ = c.recv()
    check(r.id == 7 and not r.done and r.tunnel_opened.tunnel_id == 7
          and r.tunnel_opened.window == 4096 and r.tunnel_opened.agent_window > 0,
          "OpenTunnel answered with TunnelOpened (window as asked)")
    payload = bytes(range(256)) * 64  # 16 KiB: four windows
    c.send(pb.Request(id=7, tunnel_send=pb.TunnelSend(tunnel_id=7, data=payload, eof=True)))
    got, credited, closed = b"", 4096, None
    while closed is None:
        r, _ = c.recv()
        assert r.id == 7, "tunnel responses carry the tunnel's id"
        kind = r.WhichOneof("result")
        if kind == "tunnel_data":
            got += r.tunnel_data.data
            assert len(got) <= credited, "the agent sent beyond the credit"
            if r.tunnel_data.data:
                c.send(pb.Request(id=7, tunnel_window=pb.TunnelWindow(
                    tunnel_id=7, credit=len(r.tunnel_data.data))))
                credited += len(r.tunnel_data.data)
        elif kind == "tunnel_closed":
            closed = r
    check(got == payload and closed.done and closed.tunnel_closed.bytes_out == len(payload)
          and closed.tunnel_closed.bytes_in == len(payload),
          "a tunnel echoes 16 KiB through a 4 KiB window, then TunnelClosed")
    r = c.call(pb.Request(id=8, open_tunnel=pb.OpenTunnel(target="tcp:127.0.0.1:bad")))
    check(r.error.code == pb.Error.INVALID_ARGUMENT, "a malformed target: INVALID_ARGUMENT")

    # Dedicated: the bytes after the Connect frame are the target's.
    d = Client(sock)
    req = pb.Request(id=9, connect=pb.Connect(target=target)).SerializeToString()
    d.send_raw(struct.pack(">BI", 0, len(req)) + req + b"early bytes")
    r, _ = d.recv()
    check(r.id == 9 and r.done and r.WhichOneof("result") == "ack", "Connect answered with Ack")
    d.s.shutdown(socket.SHUT_WR)
    rest = d.buf
    while True:
        b = d.s.recv(65536)
        if not b:
            break
        rest += b
    check(rest == b"early bytes", "after the Ack the connection is the target's, unframed")


def services(sock):
    """A service by the contract's names: restart, ready, WaitReady,
    ProcessRestarted on the follow stream, StopService."""
    c = Client(sock)
    c.call(pb.Request(id=1, hello=pb.Hello(protocol_version=1, client_name="py")))
    r = c.call(pb.Request(id=2, start=pb.StartProcess(
        command="/bin/sh", args=["-c", "echo up; sleep 0.2; exit 1"], tag="py-svc",
        restart=pb.RestartPolicy(mode=pb.RestartPolicy.ON_FAILURE, max_restarts=1,
                                 backoff_initial_ms=20),
        ready=pb.Probe(output=pb.OutputProbe(line_prefix="up"), interval_ms=50))))
    check(r.WhichOneof("result") == "started", "start a service")
    r = c.call(pb.Request(id=3, wait_ready=pb.WaitReady(tag="py-svc", timeout_ms=10000)))
    check(r.WhichOneof("result") == "process" and r.process.service_state == pb.READY,
          "wait_ready answers with ProcessInfo, READY")
    c.send(pb.Request(id=4, follow=pb.FollowOutput(tag="py-svc")))
    kinds = []
    while True:
        r, _ = c.recv()
        if r.id != 4:
            continue
        kinds.append(r.WhichOneof("result"))
        if r.done:
            break
    check(kinds == ["output", "ready", "exit", "restarted", "output", "ready", "exit"],
          "one log per tag: each run's output, ready and exit, restarted between")
    r = c.call(pb.Request(id=5, get_process=pb.GetProcess(tag="py-svc")))
    check(r.process.service_state == pb.FAILED and r.process.restarts == 1 and
          r.process.last_exit.exit_code == 1, "get_process by tag: FAILED after max_restarts")
    c.call(pb.Request(id=6, start=pb.StartProcess(
        command="sleep", args=["300"], tag="py-stop",
        restart=pb.RestartPolicy(mode=pb.RestartPolicy.ALWAYS))))
    r = c.call(pb.Request(id=7, stop_service=pb.StopService(tag="py-stop", grace_ms=1000)))
    check(r.WhichOneof("result") == "process" and r.process.service_state == pb.STOPPED,
          "stop_service answers once it is STOPPED")


def main():
    tmp = tempfile.mkdtemp()
    agent, sock = start_agent(tmp)
    try:
        c = Client(sock)
        r = c.call(pb.Request(id=1, hello=pb.Hello(protocol_version=1, client_name="py",
                                                     accept_zlib=True)))
        check(r.WhichOneof("result") == "hello" and r.hello.protocol_version == 1,
              "hello answered with HelloReply")
        check(r.hello.max_frame_size == 4 << 20, "max_frame_size is 4 MiB")

        r = c.call(pb.Request(id=2, ping=pb.Ping(payload=b"\x00\x01abc")))
        check(r.pong.payload == b"\x00\x01abc" and r.pong.agent_time_unix_nano > 0,
              "ping echoes its payload")

        # A compressed request, and a compressed response for a big payload.
        big = b"x" * 100000
        c.send(pb.Request(id=3, ping=pb.Ping(payload=big)), compress=True)
        r, flags = c.recv()
        check(r.id == 3 and r.pong.payload == big and flags == 1,
              "compressed frames both ways")

        r = c.call(pb.Request(id=4, info=pb.GetInfo()))
        check(r.info.agent_pid == agent.pid and r.info.cpu_count > 0, "info names the agent pid")

        r = c.call(pb.Request(id=5, cancel=pb.Cancel(target_id=999)))
        check(r.error.code == pb.Error.NOT_FOUND and r.done, "cancel of an unknown id: NOT_FOUND")

        # Pipelined requests: all answered, each echoing its id.
        for i in range(100, 150):
            c.send(pb.Request(id=i, ping=pb.Ping(payload=str(i).encode())))
        got = {}
        while len(got) < 50:
            r, _ = c.recv()
            got[r.id] = r.pong.payload
        check(all(got[i] == str(i).encode() for i in range(100, 150)), "50 pipelined pings")

        # The hex dump in docs/PROTOCOL.md: exactly these bytes go out.
        req = pb.Request(id=1, ping=pb.Ping(payload=b"hi"))
        wire = struct.pack(">BI", 0, req.ByteSize()) + req.SerializeToString()
        check(wire.hex() == "0000000008" + "0801" + "1a04" + "0a026869", "documented ping bytes")

        # Bad flags: one PROTOCOL_ERROR with id 0, then the connection closes.
        bad = Client(sock)
        bad.send_raw(b"\x80\x00\x00\x00\x00")
        r, _ = bad.recv()
        check(r.id == 0 and r.error.code == pb.Error.PROTOCOL_ERROR, "bad flags: PROTOCOL_ERROR")
        try:
            bad.recv()
            check(False, "connection closed after a protocol error")
        except EOFError:
            check(True, "connection closed after a protocol error")

        r = c.call(pb.Request(id=6, ping=pb.Ping()))
        check(r.WhichOneof("result") == "pong", "the first connection is unaffected")

        # Processes, when this agent has them: one round trip for a command.
        r = c.call(pb.Request(id=7, list_processes=pb.ListProcesses()))
        if r.WhichOneof("result") == "error" and r.error.code == pb.Error.UNIMPLEMENTED:
            print("skip processes: not in this agent")
        else:
            c.send(pb.Request(id=8, start=pb.StartProcess(
                command="/bin/sh", args=["-c", "echo out; echo err >&2; exit 3"], follow=True)))
            out, err, code = b"", b"", None
            while True:
                r, _ = c.recv()
                if r.id != 8:
                    continue
                kind = r.WhichOneof("result")
                if kind == "output":
                    if r.output.stream == pb.STDOUT:
                        out += r.output.data
                    else:
                        err += r.output.data
                elif kind == "exit":
                    code = r.exit.exit_code
                elif kind == "error":
                    raise AssertionError(r.error.message)
                if r.done:
                    break
            check(out == b"out\n" and err == b"err\n" and code == 3,
                  "start with follow: output and exit code")

            # A late follower asking from byte 0 is told what was dropped.
            r = c.call(pb.Request(id=9, start=pb.StartProcess(
                command="/bin/sh",
                args=["-c", "for i in 1 2 3 4 5; do head -c 10000 /dev/zero; sleep 0.05; done"],
                output_window=4096)))
            pid = r.started.pid
            c.call(pb.Request(id=10, wait=pb.WaitProcess(pid=pid)))
            r = c.call(pb.Request(id=11, get_process=pb.GetProcess(pid=pid)))
            oldest = r.process.oldest_sequence
            c.send(pb.Request(id=12, follow=pb.FollowOutput(pid=pid, from_sequence=0)))
            first = None
            while True:
                r, _ = c.recv()
                if r.id != 12:
                    continue
                if first is None:
                    first = r
                if r.done:
                    break
            check(oldest > 0 and first.WhichOneof("result") == "gap" and
                  first.gap.from_sequence == 0 and first.gap.to_sequence == oldest,
                  "follow from 0 after eviction: an OutputGap first")

        # id 0 belongs to the connection: refused, and the connection goes on.
        c.send(pb.Request(id=0, ping=pb.Ping()))
        r, _ = c.recv()
        check(r.id == 0 and r.done and r.error.code == pb.Error.INVALID_ARGUMENT,
              "request id 0: INVALID_ARGUMENT with id 0")
        r = c.call(pb.Request(id=13, ping=pb.Ping()))
        check(r.WhichOneof("result") == "pong", "the connection goes on after id 0")

        # Half-close: the answers in flight still come, then the close.
        h = Client(sock)
        for i in range(1, 4):
            h.send(pb.Request(id=i, ping=pb.Ping(payload=bytes([i]))))
        h.s.shutdown(socket.SHUT_WR)
        ids = []
        try:
            while True:
                r, _ = h.recv()
                ids.append(r.id)
        except EOFError:
            pass
        check(ids == [1, 2, 3], "half-close: every answer, then the close")

        tunnels(sock)
        services(sock)
    finally:
        agent.terminate()
        rc = agent.wait(10)
    check(rc == 0, "agent exits 0 on SIGTERM")


if __name__ == "__main__":
    main()
