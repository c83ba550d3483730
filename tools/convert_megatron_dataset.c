/* tools/convert_megatron_dataset — a Megatron indexed dataset to a gpt3d shard.
 *
 * Reads PREFIX.idx and PREFIX.bin through the data module's Megatron reader
 * (data.h: the MMIDIDX layout, validated when opened; pretrain_gpt reads
 * such pairs in place through the same reader). Each Megatron document (the
 * concatenation of its sequences, e.g. the sentences of --split-sentences)
 * becomes one gpt3d document, in order, so the shard holds exactly the
 * source's documents and tokens, and training on either gives the same
 * losses.
 *
 * Streaming: both files are mapped, not loaded; memory is the document
 * offsets (8 bytes per document) plus the largest document (the shard
 * writer takes a document whole). Every token id is checked against the
 * vocabulary before anything is written; on any error the partial output is
 * deleted and the message names the file.
 * Exit status: 0 converted, 2 bad usage or bad input. */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/flags.h"
#include "data/data.h"
#include "data/tokenizer_flags.h"

typedef struct {
    char *input, *output, *tokenizer_type;
    int64_t vocab_size, eod_token;
    TokenizerOptions tok; /* the tokenizer's files, to take its vocabulary and EOD from */
} Options;

static const FlagSpec FLAGS[] = {
    {"input", FLAG_STRING, offsetof(Options, input), NULL, "PREFIX",
     "the dataset prefix: PREFIX.bin and PREFIX.idx (what Megatron's --data-path names)", "input",
     true},
    {"output", FLAG_STRING, offsetof(Options, output), NULL, "FILE.h5",
     "the gpt3d token shard to write (published only when complete)", "output", true},
    {"tokenizer-type", FLAG_STRING, offsetof(Options, tokenizer_type), NULL, "TYPE",
     "the tokenizer the dataset was made with, recorded in the shard (GPT2BPETokenizer, "
     "ByteTokenizer, or another name with --vocab-size and --eod-token)",
     "tokenizer", true},
    {"vocab-size", FLAG_INT64, offsetof(Options, vocab_size), NULL, "V",
     "the tokenizer's vocabulary size (default: 50257 for GPT2BPETokenizer, 257 for "
     "ByteTokenizer)",
     "tokenizer", false},
    {"eod-token", FLAG_INT64, offsetof(Options, eod_token), NULL, "E",
     "the end-of-document id (default: 50256 for GPT2BPETokenizer, 256 for ByteTokenizer, "
     "else the tokenizer's, given its files)",
     "tokenizer", false},
    TOKENIZER_FILE_FLAGS(Options, tok, "tokenizer"),
};
#define NUM_FLAGS ((int)(sizeof FLAGS / sizeof FLAGS[0]))

#define ERR_SIZE 2048

/* ------------------------------------------------------------- conversion */

/* Every id first, so a bad one is found before anything is written. */
static bool convert(const MegatronDataset *d, TokenShardWriter *w, int64_t vocab_size, char *err,
                    size_t err_size) {
    int64_t max_id;
    if (!megatron_dataset_check_token_ids(d, vocab_size, &max_id, err, err_size)) return false;
    const uint64_t *offsets = megatron_dataset_document_offsets(d);
    int32_t *doc = NULL;
    size_t cap = 0;
    bool ok = true;
    for (int64_t k = 0; ok && k < megatron_dataset_num_documents(d); k++) {
        const uint64_t begin = offsets[k], n = offsets[k + 1] - offsets[k];
        if (n > cap) {
            cap = n;
            doc = xrealloc(doc, cap * sizeof *doc);
        }
        ok = megatron_dataset_read(d, begin, n, doc, err, err_size) &&
             token_shard_writer_add_document(w, doc, (size_t)n, err, err_size);
    }
    free(doc);
    return ok;
}

/* ------------------------------------------------------------- main */

/* With the tokenizer's files (--tokenizer-model, or GPT-2's two) its own
 * vocabulary size and EOD fill whatever --vocab-size / --eod-token leave out. */
static void take_from_tokenizer(Options *o, const FlagParser *p) {
    if (!o->tok.tokenizer_model && !o->tok.vocab_file) return;
    o->tok.tokenizer_type = o->tokenizer_type;
    o->tok.vocab_size = flags_was_set(p, "vocab-size") ? o->vocab_size : 0;
    char err[ERR_SIZE];
    Tokenizer *t = tokenizer_open(&o->tok, err, sizeof err);
    o->tok.tokenizer_type = NULL; /* owned by o->tokenizer_type */
    if (!t) gpt3d_fail_user("%s", err);
    if (!flags_was_set(p, "vocab-size")) o->vocab_size = tokenizer_vocab_size(t);
    if (!flags_was_set(p, "eod-token")) o->eod_token = tokenizer_eod(t);
    tokenizer_free(t);
}

static void resolve_vocabulary(Options *o, const FlagParser *p) {
    take_from_tokenizer(o, p);
    const bool known = o->tok.tokenizer_model || o->tok.vocab_file;
    int64_t vocab_size = 0, eod_token = 0;
    const bool builtin =
        !known && tokenizer_builtin_vocabulary(o->tokenizer_type, &vocab_size, &eod_token);
    if (!flags_was_set(p, "vocab-size") && !known) {
        if (!builtin)
            gpt3d_fail_user("--tokenizer-type %s has no known vocabulary size; give --vocab-size "
                            "and --eod-token, or the tokenizer's --tokenizer-model",
                            o->tokenizer_type);
        o->vocab_size = vocab_size;
    }
    if (!flags_was_set(p, "eod-token") && !known) {
        if (!builtin)
            gpt3d_fail_user("--tokenizer-type %s has no known end-of-document id; give "
                            "--eod-token",
                            o->tokenizer_type);
        o->eod_token = eod_token;
    }
    if (o->vocab_size < 1 || o->vocab_size > INT32_MAX)
        gpt3d_fail_user("--vocab-size must be between 1 and %d (got %" PRId64 ")", INT32_MAX,
                        o->vocab_size);
    if (o->eod_token < 0 || o->eod_token >= o->vocab_size)
        gpt3d_fail_user("--eod-token %" PRId64 " is outside the vocabulary [0, %" PRId64 ")",
                        o->eod_token, o->vocab_size);
}

static const char SUMMARY[] =
    "Converts a Megatron-LM indexed dataset (PREFIX.bin + PREFIX.idx, the MMIDIDX format of "
    "Megatron's preprocess_data.py) into a gpt3d token shard, one gpt3d document per Megatron "
    "document, streaming.";

int main(int argc, char **argv) {
    Options o;
    FlagParser parser;
    int status = flags_parse_main(&parser, FLAGS, NUM_FLAGS, &o, argc, argv,
                                  "convert_megatron_dataset", SUMMARY);
    if (status >= 0) return status;
    resolve_vocabulary(&o, &parser);
    char err[ERR_SIZE] = "";
    MegatronDataset *d = megatron_dataset_open(o.input, err, sizeof err);
    if (!d) gpt3d_fail_user("--input %s: %s", o.input, err);
    TokenShardWriter *w = token_shard_writer_create(o.output, o.tokenizer_type, o.vocab_size,
                                                    o.eod_token, err, sizeof err);
    if (!w) {
        megatron_dataset_close(d);
        gpt3d_fail_user("--output: %s", err);
    }
    bool ok = convert(d, w, o.vocab_size, err, sizeof err);
    const uint64_t documents = token_shard_writer_num_documents(w);
    const uint64_t tokens = token_shard_writer_num_tokens(w);
    if (!ok)
        token_shard_writer_abort(w);
    else
        ok = token_shard_writer_finish(w, err, sizeof err);
    if (!ok) {
        megatron_dataset_close(d);
        gpt3d_fail_user("%s (nothing was written to '%s')", err, o.output);
    }
    printf("converted %s.{idx,bin} (%s tokens): %" PRIu64 " documents, %" PRId64
           " sequences, %" PRIu64 " tokens -> %s\n",
           o.input, megatron_dataset_dtype_name(d), documents, megatron_dataset_num_sequences(d),
           tokens, o.output);
    megatron_dataset_close(d);
    flags_free(&parser, &o);
    return 0;
}
