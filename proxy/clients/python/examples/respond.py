"""Answer a service topic's requests with their value upper-cased until Ctrl-C:
python3 respond.py TOPIC GROUP"""

import sys
import time

from _common import PROXY
from defibus_proxy import Identity, StreamClient

topic, group = sys.argv[1], sys.argv[2]
me = Identity(system="example", area="A10", group=group, instance="responder-1")
with StreamClient(PROXY, me) as client:
    client.respond(topic, group, lambda request: request["value"].upper())
    print(f"responding to {topic} as {group}; Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
