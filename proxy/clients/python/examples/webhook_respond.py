"""Answer a service topic's requests from a webhook, with the standard library's HTTP server:
the proxy POSTs each request here and sends the reply this answers with. Reversed text, or
bytes reversed. Until Ctrl-C, which removes the (durable) subscription.
python3 webhook_respond.py TOPIC GROUP PORT"""

import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from _common import PROXY
from defibus_proxy import HttpClient, Identity, parse_push, reply_body

topic, group, port = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Webhook(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        push = parse_push(self.rfile.read(int(self.headers["content-length"])))
        body = reply_body(push["message"]["value"][::-1])
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", port), Webhook)
me = Identity(system="example", area="A10", group=group, instance="webhook-1")
http = HttpClient(PROXY, identity=me)
subscription = http.subscribe_webhook(topic, group, f"http://127.0.0.1:{port}/hook")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print(f"answering {topic} as {group} at http://127.0.0.1:{port}/hook ({subscription['id']}); "
      "Ctrl-C stops", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
finally:
    http.unsubscribe_webhook(subscription["id"])
