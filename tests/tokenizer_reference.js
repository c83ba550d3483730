// tests/tokenizer_reference.js — reference token ids for test_tokenizer_hf.
//   node tokenizer_reference.js MODULES hf TOKENIZER_JSON INPUT OUTPUT
//     Hugging Face's `tokenizers` (Node binding): encode(text) with its
//     defaults (special tokens added, as Megatron's HuggingFaceTokenizer).
//   node tokenizer_reference.js MODULES tiktoken v1|v2 NUM_SPECIAL INPUT OUTPUT
//     tiktoken with cl100k_base's ranks shifted by NUM_SPECIAL, Megatron's
//     pattern and special tokens, encode(text, "all") as Megatron does.
//   node tokenizer_reference.js MODULES export-tiktoken OUTPUT
//     writes cl100k_base's ranks as a .tiktoken file ("base64 rank" lines).
// INPUT holds UTF-8 documents separated by NUL bytes; OUTPUT gets one line
// per document with its ids separated by spaces.
'use strict';
const fs = require('fs');
const path = require('path');

const modules = path.resolve(process.argv[2]);
const mode = process.argv[3];

// Megatron-LM's _PATTERN_TIKTOKEN_V1 / _V2 and its special tokens
// (megatron/core/tokenizers/text/libraries/tiktoken_tokenizer.py).
const PATTERNS = {
    v1: String.raw`[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`,
    v2: String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
};
const SPECIALS = ['<unk>', '<s>', '</s>', '<mask>', '<pad>', '<cls>', '<sep>'];

function cl100k() {
    return JSON.parse(fs.readFileSync(path.join(modules, 'tiktoken/encoders/cl100k_base.json'), 'utf8'));
}

// The package's compact ranks: "! OFFSET tok tok ..." runs of consecutive ranks.
function ranksWithOffset(bpeRanks, shift) {
    return bpeRanks.replace(/! (\d+)/g, (_, offset) => '! ' + (Number(offset) + shift));
}

function writeIds(output, documents, encode) {
    fs.writeFileSync(output, documents.map((d) => Array.from(encode(d)).join(' ')).join('\n') + '\n');
}

function readDocuments(input) {
    return fs.readFileSync(input, 'utf8').split('\0');
}

if (mode === 'hf') {
    const { Tokenizer } = require(path.join(modules, 'tokenizers'));
    const tokenizer = Tokenizer.fromFile(process.argv[4]);
    const documents = readDocuments(process.argv[5]);
    (async () => {
        const lines = [];
        for (const d of documents) lines.push((await tokenizer.encode(d)).getIds().join(' '));
        fs.writeFileSync(process.argv[6], lines.join('\n') + '\n');
    })();
} else if (mode === 'tiktoken') {
    const { Tiktoken } = require(path.join(modules, 'tiktoken/lite/tiktoken.cjs'));
    const numSpecial = Number(process.argv[5]);
    const specials = {};
    for (let i = 0; i < numSpecial; i++) specials[i < SPECIALS.length ? SPECIALS[i] : `<SPECIAL_${i}>`] = i;
    const enc = new Tiktoken(ranksWithOffset(cl100k().bpe_ranks, numSpecial), specials, PATTERNS[process.argv[4]]);
    writeIds(process.argv[7], readDocuments(process.argv[6]), (d) => enc.encode(d, 'all'));
    enc.free();
} else if (mode === 'export-tiktoken') {
    const out = [];
    for (const run of cl100k().bpe_ranks.split('!')) {
        const words = run.trim().split(/\s+/);
        if (words[0] === '') continue;
        let rank = Number(words[0]);
        for (const token of words.slice(1)) out.push(`${token} ${rank++}`);
    }
    fs.writeFileSync(process.argv[4], out.join('\n') + '\n');
} else {
    process.stderr.write('usage: see the top of tokenizer_reference.js\n');
    process.exit(2);
}
