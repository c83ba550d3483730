#!/bin/sh
# tests/fetch_tensorboard_reader.sh DIR — the independent TensorBoard event
# reader of test_tensorboard_e2e, from npm into DIR/npm (tests/fetch_npm.sh
# has the rules and exit statuses):
#   tfrecord     TFRecord framing, checking both masked CRC32Cs of a record
#   protobufjs   protocol buffers, decoding with a schema given as .proto text
if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
exec sh "$(dirname "$0")/fetch_npm.sh" "$1" tfrecord@0.2.0 protobufjs@7.5.4
