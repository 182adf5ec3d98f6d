#!/usr/bin/env python3
"""Small Kafka helper for kafka-store's integration tests (confluent-kafka).

Run it with the test-services venv:

    <state>/venv/bin/python tests/support/kafka_tool.py \
        --bootstrap 127.0.0.1:9092 [--timeout SECONDS] COMMAND ...

Commands:
    metadata
        One line per broker: "<id> <host>:<port>". Fails when no broker answers
        (used as the readiness probe).
    create-topic --topic T --partitions N [--config key=value ...] [--if-not-exists]
        Replication 1; waits until every partition has a leader.
    delete-topic --topic T
        Waits until the topic is gone from the metadata.
    high-watermarks --topic T [--uncommitted]
        One line per partition: "<partition> <low> <high>"; high is the last
        stable offset, or the high watermark with --uncommitted.
    add-partitions --topic T --total N
        Grows the topic to N partitions.
    delete-records --topic T --partition P --offset O
        Deletes the records before O, as retention would.
    produce --topic T [--compression none|gzip|snappy|lz4|zstd]
            [--transactional-id ID] [--batch-size BYTES] [--linger-ms MS]
            [--producer-config key=value ...]
        Reads frames from stdin (all integers big-endian):
          b'R' partition:i32 timestamp_ms:i64 key_len:i32 key value_len:i32 value
               header_count:i32 { key_len:i32 key(UTF-8) value_len:i32 value }*
               (a length of -1 is a null key / value / header value)
          b'B' begin transaction   b'C' commit transaction
          b'A' abort transaction   b'F' flush
        At EOF: flush, then print "<partition> <offset>" per R frame, in input
        order (records of aborted transactions keep their offsets).
    consume --topic T
        Every committed record up to the end seen at start, as JSON lines
        (partition, offset, timestamp, timestamp_type, key, value, headers;
        bytes in base64).

Errors go to stderr with exit code 1.
"""

import argparse
import struct
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

_I32 = struct.Struct(">i")
_REC_HEAD = struct.Struct(">iqi")  # partition, timestamp, key_len
_READ_CHUNK = 1 << 20


class ToolError(Exception):
    pass


def _common_config(args):
    return {
        "bootstrap.servers": args.bootstrap,
        # Connection-refused chatter is expected while probing a starting broker.
        "log_level": 3,
    }


def _parse_kv(items, what):
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ToolError(f"{what}: expected key=value, got {item!r}")
        out[key] = value
    return out


def _list_topics(client, topic, timeout):
    try:
        return client.list_topics(topic=topic, timeout=timeout)
    except KafkaException as e:
        raise ToolError(f"metadata request failed: {e}") from None


# --------------------------------------------------------------------------- metadata


def cmd_metadata(args):
    admin = AdminClient(_common_config(args))
    md = _list_topics(admin, None, args.timeout)
    if not md.brokers:
        raise ToolError("metadata lists no broker")
    for broker in sorted(md.brokers.values(), key=lambda b: b.id):
        print(f"{broker.id} {broker.host}:{broker.port}")


# --------------------------------------------------------------------------- topics


def cmd_create_topic(args):
    if args.partitions < 1:
        raise ToolError("--partitions must be >= 1")
    admin = AdminClient(_common_config(args))
    config = _parse_kv(args.config, "--config")
    if args.assignment:
        assignment = [[int(b) for b in part.split(",")] for part in args.assignment.split(";")]
        if len(assignment) != args.partitions:
            raise ToolError("--assignment must list the replicas of every partition")
        new = NewTopic(args.topic, num_partitions=len(assignment), replica_assignment=assignment, config=config)
    else:
        new = NewTopic(
            args.topic,
            num_partitions=args.partitions,
            replication_factor=args.replication_factor,
            config=config,
        )
    fut = admin.create_topics([new], operation_timeout=args.timeout, request_timeout=args.timeout)[args.topic]
    try:
        fut.result()
    except KafkaException as e:
        err = e.args[0] if e.args else None
        if not (args.if_not_exists and isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise ToolError(f"create topic {args.topic}: {e}") from None

    deadline = time.monotonic() + args.timeout
    while True:
        md = _list_topics(admin, args.topic, args.timeout)
        t = md.topics.get(args.topic)
        if (
            t is not None
            and t.error is None
            and len(t.partitions) >= args.partitions
            and all(p.error is None and p.leader >= 0 for p in t.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise ToolError(f"topic {args.topic}: partitions have no leader after {args.timeout} s")
        time.sleep(0.05)


def cmd_delete_topic(args):
    admin = AdminClient(_common_config(args))
    fut = admin.delete_topics([args.topic], operation_timeout=args.timeout, request_timeout=args.timeout)[args.topic]
    try:
        fut.result()
    except KafkaException as e:
        raise ToolError(f"delete topic {args.topic}: {e}") from None
    deadline = time.monotonic() + args.timeout
    while True:
        md = _list_topics(admin, None, args.timeout)
        if args.topic not in md.topics:
            return
        if time.monotonic() > deadline:
            raise ToolError(f"topic {args.topic} still listed {args.timeout} s after deletion")
        time.sleep(0.05)


def cmd_high_watermarks(args):
    consumer = Consumer(
        {
            **_common_config(args),
            "group.id": "kafka-tool-watermarks",
            "enable.auto.commit": False,
            # read_committed (the default) reports the last stable offset.
            "isolation.level": "read_uncommitted" if args.uncommitted else "read_committed",
        }
    )
    try:
        md = _list_topics(consumer, args.topic, args.timeout)
        t = md.topics.get(args.topic)
        if t is None or t.error is not None:
            raise ToolError(f"topic {args.topic}: {t.error if t is not None else 'not found'}")
        lines = []
        for p in sorted(t.partitions):
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=args.timeout, cached=False)
            except KafkaException as e:
                raise ToolError(f"watermarks of {args.topic}/{p}: {e}") from None
            lines.append(f"{p} {low} {high}\n")
        sys.stdout.write("".join(lines))
    finally:
        consumer.close()


def cmd_add_partitions(args):
    """Grows a topic to --total partitions."""
    from confluent_kafka.admin import NewPartitions

    admin = AdminClient(_common_config(args))
    futures = admin.create_partitions([NewPartitions(args.topic, args.total)], request_timeout=args.timeout)
    try:
        for fut in futures.values():
            fut.result(timeout=args.timeout)
    except KafkaException as e:
        raise ToolError(f"add partitions to {args.topic}: {e}") from None


def cmd_delete_records(args):
    """Deletes records before --offset in one partition (as retention would)."""
    admin = AdminClient(_common_config(args))
    tp = TopicPartition(args.topic, args.partition, args.offset)
    futures = admin.delete_records([tp], request_timeout=args.timeout)
    try:
        for fut in futures.values():
            fut.result(timeout=args.timeout)
    except KafkaException as e:
        raise ToolError(f"delete records of {args.topic}/{args.partition} before {args.offset}: {e}") from None


def cmd_consume(args):
    """Prints every committed record of a topic, from the log start to the
    last stable offset seen at start, as JSON lines: partition, offset,
    timestamp, timestamp_type ("create" or "log_append"), key, value and
    headers ([key, value] pairs), bytes in base64 and null kept null."""
    import base64
    import json

    def b64(b):
        return None if b is None else base64.b64encode(b).decode()

    consumer = Consumer(
        {
            **_common_config(args),
            "group.id": "kafka-tool-consume",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        md = _list_topics(consumer, args.topic, args.timeout)
        t = md.topics.get(args.topic)
        if t is None or t.error is not None:
            raise ToolError(f"topic {args.topic}: {t.error if t is not None else 'not found'}")
        ends, assign = {}, []
        for p in sorted(t.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=args.timeout, cached=False)
            if high > low:
                ends[p] = high
                assign.append(TopicPartition(args.topic, p, low))
        if assign:
            consumer.assign(assign)
        out = sys.stdout
        deadline = time.monotonic() + args.timeout
        while ends:
            if time.monotonic() > deadline:
                raise ToolError(f"consume {args.topic}: partitions {sorted(ends)} not read to their end in {args.timeout} s")
            for m in consumer.consume(num_messages=10000, timeout=0.5):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise ToolError(f"consume {args.topic}: {m.error()}")
                p, off = m.partition(), m.offset()
                kind, ts = m.timestamp()
                out.write(json.dumps({
                    "partition": p,
                    "offset": off,
                    "timestamp": ts,
                    "timestamp_type": "log_append" if kind == 2 else "create",
                    "key": b64(m.key()),
                    "value": b64(m.value()),
                    "headers": [[k, b64(v)] for k, v in (m.headers() or [])],
                }) + "\n")
                deadline = time.monotonic() + args.timeout
                if p in ends and off + 1 >= ends[p]:
                    del ends[p]
            for p in list(ends):
                pos = consumer.position([TopicPartition(args.topic, p)])[0].offset
                if pos >= ends[p]:
                    del ends[p]
        out.flush()
    finally:
        consumer.close()


# --------------------------------------------------------------------------- produce


class _FrameReader:
    """Buffered big-endian frame reader over a binary stream."""

    __slots__ = ("_f", "_buf", "_pos")

    def __init__(self, f):
        self._f = f
        self._buf = b""
        self._pos = 0

    def _fill(self, n):
        """Make at least n bytes available from _pos; False at clean EOF."""
        have = len(self._buf) - self._pos
        parts = [self._buf[self._pos :]] if have else []
        while have < n:
            # read1: whatever is available (streamed input is produced promptly).
            chunk = self._f.read1(max(_READ_CHUNK, n - have))
            if not chunk:
                if have == 0:
                    self._buf, self._pos = b"", 0
                    return False
                raise ToolError(f"truncated frame: stdin ended {n - have} bytes early")
            parts.append(chunk)
            have += len(chunk)
        self._buf = b"".join(parts) if len(parts) != 1 else parts[0]
        self._pos = 0
        return True

    def tag(self):
        if self._pos >= len(self._buf) and not self._fill(1):
            return None
        t = self._buf[self._pos]
        self._pos += 1
        return t

    def struct(self, st):
        if len(self._buf) - self._pos < st.size and not self._fill(st.size):
            raise ToolError("truncated frame: stdin ended inside a frame")
        v = st.unpack_from(self._buf, self._pos)
        self._pos += st.size
        return v

    def i32(self):
        return self.struct(_I32)[0]

    def blob(self, n):
        """n bytes, or None for n == -1."""
        if n < 0:
            if n != -1:
                raise ToolError(f"bad length {n}")
            return None
        if len(self._buf) - self._pos < n and not self._fill(n):
            raise ToolError("truncated frame: stdin ended inside a frame")
        p = self._pos
        self._pos = p + n
        return self._buf[p : p + n]


class _Results:
    __slots__ = ("partitions", "offsets", "error", "pending")

    def __init__(self):
        self.partitions = []
        self.offsets = []
        self.error = None
        self.pending = 0

    def callback(self, index):
        def on_delivery(err, msg):
            self.pending -= 1
            if err is not None:
                if self.error is None:
                    self.error = f"delivery of record #{index} failed: {err}"
                return
            self.partitions[index] = msg.partition()
            self.offsets[index] = msg.offset()

        return on_delivery


def cmd_produce(args):
    conf = {
        **_common_config(args),
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": args.compression,
        "batch.size": args.batch_size,
        "linger.ms": args.linger_ms,
        "queue.buffering.max.messages": 1_000_000,
        "message.timeout.ms": max(int(args.timeout * 1000), 1000),
    }
    if args.transactional_id:
        conf["transactional.id"] = args.transactional_id
        conf["transaction.timeout.ms"] = 60_000
    conf.update(_parse_kv(args.producer_config, "--producer-config"))
    producer = Producer(conf)
    transactional = bool(args.transactional_id)
    if transactional:
        try:
            producer.init_transactions(args.timeout)
        except KafkaException as e:
            raise ToolError(f"init_transactions: {e}") from None

    res = _Results()
    reader = _FrameReader(sys.stdin.buffer)
    topic = args.topic
    produce = producer.produce
    poll = producer.poll
    rec_head = _REC_HEAD
    i32 = reader.i32
    blob = reader.blob
    count = 0

    def flush():
        remaining = producer.flush(args.timeout)
        if remaining:
            raise ToolError(f"{remaining} records still undelivered after {args.timeout} s")
        if res.error:
            raise ToolError(res.error)

    def txn(op, name):
        if not transactional:
            raise ToolError(f"'{name}' frame needs --transactional-id")
        try:
            op()
        except KafkaException as e:
            raise ToolError(f"{name}: {e}") from None

    while True:
        tag = reader.tag()
        if tag is None:
            break
        if tag == 0x52:  # 'R'
            partition, timestamp, key_len = reader.struct(rec_head)
            key = blob(key_len)
            value = blob(i32())
            nh = i32()
            headers = None
            if nh:
                if nh < 0:
                    raise ToolError(f"record #{count}: bad header count {nh}")
                headers = []
                for _ in range(nh):
                    hk = blob(i32())
                    if hk is None:
                        raise ToolError(f"record #{count}: null header key")
                    hv = blob(i32())
                    headers.append((hk.decode("utf-8"), hv))
            res.partitions.append(partition)
            res.offsets.append(None)
            cb = res.callback(count)
            count += 1
            while True:
                try:
                    if headers is None:
                        produce(topic, value, key, partition, on_delivery=cb, timestamp=timestamp)
                    else:
                        produce(topic, value, key, partition, on_delivery=cb, timestamp=timestamp, headers=headers)
                    break
                except BufferError:
                    poll(0.05)
                except KafkaException as e:
                    raise ToolError(f"produce record #{count - 1}: {e}") from None
            res.pending += 1
            if count & 0x3FF == 0:
                poll(0)
                if res.error:
                    raise ToolError(res.error)
        elif tag == 0x42:  # 'B'
            txn(producer.begin_transaction, "begin transaction")
        elif tag == 0x43:  # 'C'
            if transactional:
                flush()
            txn(lambda: producer.commit_transaction(args.timeout), "commit transaction")
        elif tag == 0x41:  # 'A'
            if transactional:
                flush()
            txn(lambda: producer.abort_transaction(args.timeout), "abort transaction")
        elif tag == 0x46:  # 'F'
            flush()
        else:
            raise ToolError(f"unknown frame tag {tag:#04x} after {count} records")

    flush()
    missing = [i for i, o in enumerate(res.offsets) if o is None]
    if missing:
        raise ToolError(f"{len(missing)} records got no delivery report (first: #{missing[0]})")
    out = sys.stdout
    parts = res.partitions
    offs = res.offsets
    step = 65536
    for start in range(0, count, step):
        out.write("".join(f"{parts[i]} {offs[i]}\n" for i in range(start, min(start + step, count))))
    out.flush()


# --------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(prog="kafka_tool.py", description="Kafka helper for kafka-store tests.")
    ap.add_argument("--bootstrap", default="127.0.0.1:9092", help="bootstrap servers (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-operation timeout in seconds (default %(default)s)")
    sub = ap.add_subparsers(dest="command", required=True)

    sub.add_parser("metadata", help="list brokers (readiness probe)").set_defaults(func=cmd_metadata)

    p = sub.add_parser("create-topic", help="create a topic (replication 1 unless told)")
    p.add_argument("--replication-factor", type=int, default=1)
    p.add_argument("--assignment", help="replica broker ids per partition, e.g. '11,12;12,11'")
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--config", action="append", metavar="KEY=VALUE", help="topic config, repeatable")
    p.add_argument("--if-not-exists", action="store_true", help="succeed if the topic already exists")
    p.set_defaults(func=cmd_create_topic)

    p = sub.add_parser("delete-topic", help="delete a topic")
    p.add_argument("--topic", required=True)
    p.set_defaults(func=cmd_delete_topic)

    p = sub.add_parser("high-watermarks", help="print '<partition> <low> <high>' per partition")
    p.add_argument("--topic", required=True)
    p.add_argument("--uncommitted", action="store_true", help="high watermark instead of the last stable offset")
    p.set_defaults(func=cmd_high_watermarks)

    p = sub.add_parser("add-partitions", help="grow a topic to --total partitions")
    p.add_argument("--topic", required=True)
    p.add_argument("--total", type=int, required=True)
    p.set_defaults(func=cmd_add_partitions)

    p = sub.add_parser("delete-records", help="delete records before an offset (like retention)")
    p.add_argument("--topic", required=True)
    p.add_argument("--partition", type=int, required=True)
    p.add_argument("--offset", type=int, required=True)
    p.set_defaults(func=cmd_delete_records)

    p = sub.add_parser("consume", help="print every committed record as JSON lines")
    p.add_argument("--topic", required=True)
    p.set_defaults(func=cmd_consume)

    p = sub.add_parser("produce", help="produce records framed on stdin")
    p.add_argument("--topic", required=True)
    p.add_argument("--compression", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
    p.add_argument("--transactional-id")
    p.add_argument("--batch-size", type=int, default=64 * 1024, help="bytes (default %(default)s)")
    p.add_argument("--linger-ms", type=float, default=5.0, help="default %(default)s")
    p.add_argument("--producer-config", action="append", metavar="KEY=VALUE", help="extra librdkafka producer setting, repeatable")
    p.set_defaults(func=cmd_produce)

    args = ap.parse_args(argv)
    try:
        args.func(args)
    except ToolError as e:
        print(f"kafka_tool: {args.command}: {e}", file=sys.stderr)
        return 1
    except KafkaException as e:
        print(f"kafka_tool: {args.command}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
