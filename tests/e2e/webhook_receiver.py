"""A webhook receiver for the end-to-end tests: verifies every delivery with the official
Standard Webhooks library and records it.

Usage: webhook_receiver.py <port> <dir>

POST /hooks/<name>: the secrets are the lines of <dir>/secrets/<name> (any may verify); the
answer is chosen by <dir>/mode/<name>: `ok` (the default, 204), `down` (503), `gone` (410),
or `hang-once` (the first request of each webhook-id gets no answer for 30 s, later ones 204).
Every request is appended to <dir>/seen.jsonl as one JSON object.
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PORT, DIR = int(sys.argv[1]), sys.argv[2]
LOCK = threading.Lock()
HUNG = set()


def read(path, default):
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return default


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        name = self.path.rsplit("/", 1)[-1]
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        headers = {k: self.headers.get(k, "") for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        verified = False
        for secret in read(os.path.join(DIR, "secrets", name), "").split():
            try:
                Webhook(secret).verify(body, headers)
                verified = True
                break
            except WebhookVerificationError:
                pass
        mode = read(os.path.join(DIR, "mode", name), "ok")
        status = {"ok": 204, "down": 503, "gone": 410}.get(mode, 204)
        hang = False
        with LOCK:
            if mode == "hang-once" and headers["webhook-id"] not in HUNG:
                HUNG.add(headers["webhook-id"])
                hang = True
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        record = {
            "endpoint": name,
            "id": headers["webhook-id"],
            "verified": verified,
            "signatures": len(headers["webhook-signature"].split()),
            "answered": "hang" if hang else status,
            "type": (payload or {}).get("type"),
            "data": (payload or {}).get("data"),
        }
        with LOCK:
            with open(os.path.join(DIR, "seen.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
        if hang:
            time.sleep(30)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()


if __name__ == "__main__":
    os.makedirs(os.path.join(DIR, "secrets"), exist_ok=True)
    os.makedirs(os.path.join(DIR, "mode"), exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()
