"""Publish one message over HTTP: python3 publish.py TOPIC VALUE"""

import sys

from _common import PROXY
from defibus_proxy import HttpClient

topic, value = sys.argv[1], sys.argv[2]
stored = HttpClient(PROXY).publish(topic, value)
print(f"queue={stored['queue_id']} offset={stored['offset']} broker={stored['broker_id']}")
