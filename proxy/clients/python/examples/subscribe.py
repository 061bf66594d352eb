"""Print every message of a topic as group GROUP until Ctrl-C (acked after printing):
python3 subscribe.py TOPIC GROUP"""

import sys
import time

from _common import PROXY
from defibus_proxy import Identity, StreamClient

topic, group = sys.argv[1], sys.argv[2]
me = Identity(system="example", area="A10", group=group, instance="subscriber-1")
with StreamClient(PROXY, me) as client:
    client.subscribe(topic, group, lambda d: print(f"offset={d.message['offset']} value={d.value}"))
    print(f"subscribed to {topic} as {group}; Ctrl-C stops")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
