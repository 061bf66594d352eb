"""Send a request over HTTP and print the reply: python3 request.py TOPIC VALUE"""

import sys

from _common import PROXY
from defibus_proxy import HttpClient, ProxyTimeout

topic, value = sys.argv[1], sys.argv[2]
try:
    print(HttpClient(PROXY).request(topic, value, timeout_ms=3000)["value"])
except ProxyTimeout as timeout:
    sys.exit(f"no reply: {timeout.message}")
