"""Processes tests/test_streaming_redis.py kills (run as a script):
``STORE URL STREAM CONSUMER`` streams Redis stream STREAM (consumer group ``g``) into
feature group ``e`` with small micro-batches and frequent offline flushes, forever.
Prints ``ready`` once the store is open."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    import pitstop as ps

    store, url, stream, consumer = argv
    fs = ps.FeatureStore(store)
    g = fs.get_feature_group("e")
    src = ps.sources.RedisStream(url, stream=stream, group="g", consumer=consumer)
    job = fs.stream(src, into=g, max_batch=25, max_delay="5ms", offline_flush="80ms")
    print("ready", flush=True)
    job.run()
    print("stopped", job.stats(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
