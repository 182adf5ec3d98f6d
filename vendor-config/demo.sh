#!/usr/bin/env bash
# The end-to-end demo of the README's first command: brings up a genuine
# Kafka broker on 127.0.0.1:9092 (vendor-config/test-services.sh), produces a
# demo topic, archives it into ./archive with `kafka-store run
# --until-caught-up`, and shows the result with `kafka-store ls` and the
# first records with `kafka-store cat`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
state=${KAFKA_STORE_SERVICES:-$repo/.services}

bash vendor-config/test-services.sh up
cargo build --quiet
bin=$repo/target/debug/kafka-store

topic=demo-events
tool() { "$state/venv/bin/python" tests/support/kafka_tool.py --bootstrap 127.0.0.1:9092 "$@"; }
if ! tool high-watermarks --topic "$topic" >/dev/null 2>&1; then
	tool create-topic --topic "$topic" --partitions 3
	# 30,000 JSON events with a key and a header, produced with zstd.
	"$state/venv/bin/python" - <<'PY' | tool produce --topic "$topic" --compression zstd >/dev/null
import json, struct, sys, time
out = sys.stdout.buffer
now = int(time.time() * 1000)
for i in range(30000):
    key = b"user-%d" % (i % 97)
    value = json.dumps({"seq": i, "event": "click", "page": "/item/%d" % (i % 500)}).encode()
    out.write(b"R" + struct.pack(">iqi", i % 3, now + i, len(key)) + key
              + struct.pack(">i", len(value)) + value
              + struct.pack(">ii", 1, 6) + b"source" + struct.pack(">i", 4) + b"demo")
PY
fi

mkdir -p archive
cat >archive/demo.toml <<TOML
[kafka]
brokers = ["127.0.0.1:9092"]
group_id = "kafka-store-demo"
topics = ["$topic"]

[store]
url = "file://$repo/archive"
spool_dir = "$repo/archive/.spool"

[files]
max_file_records = 4000
TOML

"$bin" run --config archive/demo.toml --until-caught-up
echo
"$bin" ls --config archive/demo.toml
echo
echo "first two records of $topic/0:"
"$bin" cat --config archive/demo.toml "$topic/000000/00000000000000000000.avro" | head -n 2
