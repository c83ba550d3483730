// tests/tensorboard_reader.js — an event file read by code not written for
// gpt3d: the npm package `tfrecord` frames the records (its RecordReader
// checks the masked CRC32C of each length and of each record's bytes) and
// `protobufjs` decodes each record with TensorBoard's own field numbers
// (tensorflow/core/util/event.proto, tensorflow/core/framework/summary.proto;
// the fields gpt3d never writes are left out, which only makes a reader of
// them skip such fields).
//   node tensorboard_reader.js MODULES EVENT_FILE
// prints one line per record, tab-separated:
//   version WALL_TIME STEP FILE_VERSION
//   scalar  WALL_TIME STEP TAG VALUE     (one line per Summary.Value)
// and exits 1 with the reader's message on a bad record.
'use strict';
const path = require('path');

const modules = path.resolve(process.argv[2]);
const file = process.argv[3];
const { RecordReader } = require(path.join(modules, 'tfrecord/lib/record_reader'));
const protobuf = require(path.join(modules, 'protobufjs'));

const SCHEMA = `
syntax = "proto3";
package tensorboard;
message Event {
  double wall_time = 1;
  int64 step = 2;
  oneof what {
    string file_version = 3;
    bytes graph_def = 4;
    Summary summary = 5;
  }
}
message Summary {
  message Value {
    string node_name = 7;
    string tag = 1;
    oneof value {
      float simple_value = 2;
      bytes obsolete_old_style_histogram = 3;
    }
  }
  repeated Value value = 1;
}
`;
const Event = protobuf.parse(SCHEMA, { keepCase: true }).root.lookupType('tensorboard.Event');

async function main() {
    const reader = await RecordReader.create(file);
    const lines = [];
    for (let record; (record = await reader.readRecord()) !== null;) {
        const e = Event.toObject(Event.decode(record), { longs: String, oneofs: true });
        const head = [String(e.wall_time ?? 0), e.step ?? '0'];
        if (e.what === 'file_version') {
            lines.push(['version', ...head, e.file_version].join('\t'));
        } else if (e.what === 'summary') {
            for (const v of e.summary.value ?? []) {
                if (v.value !== 'simple_value') throw new Error(`tag '${v.tag}' holds no simple_value`);
                lines.push(['scalar', ...head, v.tag, String(v.simple_value)].join('\t'));
            }
        } else {
            throw new Error(`a record that is neither a file version nor a summary: ${JSON.stringify(e)}`);
        }
    }
    process.stdout.write(lines.map((l) => l + '\n').join(''));
}

main().catch((e) => {
    process.stderr.write(`tensorboard_reader: ${file}: ${e.message}\n`);
    process.exit(1);
});
