// tests/gpt2_reference.js — GPT-2 token ids from the JavaScript reference
// encoder of the npm package gpt-3-encoder, for test_tokenizer_gpt2.
//   node gpt2_reference.js PACKAGE_DIR INPUT OUTPUT
// INPUT holds UTF-8 documents separated by NUL bytes; OUTPUT gets one line per
// document with its ids separated by spaces.
'use strict';
const fs = require('fs');
const path = require('path');

if (process.argv.length !== 5) {
    process.stderr.write('usage: node gpt2_reference.js PACKAGE_DIR INPUT OUTPUT\n');
    process.exit(2);
}
const encoder = require(path.resolve(process.argv[2]));
const documents = fs.readFileSync(process.argv[3], 'utf8').split('\0');
const lines = documents.map((text) => encoder.encode(text).join(' '));
fs.writeFileSync(process.argv[4], lines.join('\n') + '\n');
