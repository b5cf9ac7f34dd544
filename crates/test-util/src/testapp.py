"""A small web app the end-to-end tests run inside an instance (python3, standard
library only), on ports the instance exposes:

  GET  /headers          the request's headers as JSON
  GET  /page.html        a page that fetches /sub.txt, opens a WebSocket to /ws,
                         then reports both to /result (for the browser test)
  GET  /sub.txt          a sub-resource
  GET  /result?...       records the page's report
  GET  /wait-result      answers once a report came (the page's load event waits for
                         it, so a headless browser dumping the DOM at load sees the end)
  GET  /sse?n=&gap=      n server-sent events, `gap` seconds apart (chunked)
  GET  /ws               WebSocket echo ("echo:" + message); records closes
  GET  /ws-server-close  echoes one message, then the server closes
  POST /upload           reads the body, answers its size

Every request and WebSocket event is appended to $APP_LOG (default /tmp/app.log).

    python3 testapp.py PORT
"""

import base64
import hashlib
import json
import os
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = os.environ.get("APP_LOG", "/tmp/app.log")
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RESULT = threading.Event()

PAGE = """<!doctype html><html><head><title>loading</title></head><body>
<img src="/wait-result" alt=""><script>
(async () => {
  const sub = (await (await fetch('/sub.txt')).text()).trim();
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const echoed = await new Promise((done) => {
    const ws = new WebSocket(scheme + location.host + '/ws');
    ws.onopen = () => ws.send('ping');
    ws.onmessage = (e) => { done(e.data); ws.close(); };
    ws.onerror = () => done('ws-error');
  });
  await fetch('/result?sub=' + encodeURIComponent(sub) + '&ws=' + encodeURIComponent(echoed));
  document.title = 'done ' + sub + ' ' + echoed;
})();
</script></body></html>"""


def note(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")


def read_exact(rfile, n):
    data = b""
    while len(data) < n:
        chunk = rfile.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(rfile):
    head = read_exact(rfile, 2)
    if head is None:
        return None, None
    op, n = head[0] & 0x0F, head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(rfile, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(rfile, 8))[0]
    mask = read_exact(rfile, 4) if head[1] & 0x80 else b"\0\0\0\0"
    payload = read_exact(rfile, n) or b""
    return op, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def send_frame(wfile, op, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | op, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | op, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | op, 127, n)
    wfile.write(head + payload)
    wfile.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self, code, data, ctype="text/plain"):
        data = data.encode() if isinstance(data, str) else data
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        note(f"GET {self.path} cookie={self.headers.get('cookie', '')}")
        if path == "/headers":
            headers = {k.lower(): v for k, v in self.headers.items()}
            return self.body(200, json.dumps(headers), "application/json")
        if path == "/page.html":
            return self.body(200, PAGE, "text/html")
        if path == "/sub.txt":
            return self.body(200, "sub-ok")
        if path == "/result":
            note("RESULT " + query)
            RESULT.set()
            return self.body(200, "ok")
        if path == "/wait-result":
            RESULT.wait(30)
            return self.body(200, b"GIF89a", "image/gif")
        if path == "/sse":
            return self.sse(dict(p.split("=", 1) for p in query.split("&") if "=" in p))
        if path in ("/ws", "/ws-server-close"):
            return self.websocket(path == "/ws-server-close")
        return self.body(404, "not found")

    def do_POST(self):
        got = 0
        if "chunked" in self.headers.get("transfer-encoding", ""):
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                got += len(read_exact(self.rfile, size) or b"")
                self.rfile.readline()
        else:
            n = int(self.headers.get("content-length") or 0)
            while got < n:
                chunk = self.rfile.read(min(65536, n - got))
                if not chunk:
                    break
                got += len(chunk)
        return self.body(200, json.dumps({"received": got}), "application/json")

    def sse(self, q):
        count, gap = int(q.get("n", "3")), float(q.get("gap", "1"))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i in range(count):
            if i:
                time.sleep(gap)
            event = f"data: {i} {time.time():.3f}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def websocket(self, server_closes):
        key = self.headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.send_header("sec-websocket-accept", accept)
        self.end_headers()
        self.wfile.flush()
        note("WS open")
        while True:
            op, payload = read_frame(self.rfile)
            if op is None:
                note("WS eof")
                break
            if op == 8:
                note("WS close from client")
                send_frame(self.wfile, 8, payload[:2])
                break
            if op == 9:
                send_frame(self.wfile, 10, payload)
            elif op in (1, 2):
                note("WS message " + payload.decode(errors="replace"))
                send_frame(self.wfile, op, b"echo:" + payload)
                if server_closes:
                    send_frame(self.wfile, 8, struct.pack("!H", 1000) + b"bye")
                    note("WS close from server")
        self.close_connection = True


if __name__ == "__main__":
    port = int(sys.argv[1])
    note(f"listening on {port}")
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
