/* bench_make_tokens: a token shard of pseudo-random ids for benchmarks that
 * need a real vocabulary size (GPT-2's 50257) without a tokenizer's files.
 * Usage: bench_make_tokens OUT.h5 VOCAB_SIZE NUM_DOCUMENTS DOC_TOKENS
 * The shard says GPT2BPETokenizer so pretrain_gpt accepts it with
 * --tokenizer-type GPT2BPETokenizer; the ids carry no text, which does not
 * matter for timing. */
#include <stdio.h>
#include <stdlib.h>

#include "core/rng.h"
#include "data/data.h"

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s OUT.h5 VOCAB_SIZE NUM_DOCUMENTS DOC_TOKENS\n", argv[0]);
        return 2;
    }
    const long long vocab = atoll(argv[2]), docs = atoll(argv[3]), len = atoll(argv[4]);
    if (vocab < 2 || docs < 1 || len < 1) {
        fprintf(stderr, "%s: VOCAB_SIZE >= 2, NUM_DOCUMENTS >= 1 and DOC_TOKENS >= 1\n", argv[0]);
        return 2;
    }
    char err[1024];
    TokenShardWriter *w =
        token_shard_writer_create(argv[1], "GPT2BPETokenizer", vocab, vocab - 1, err, sizeof err);
    if (!w) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    for (long long d = 0; d < docs; d++) {
        for (long long i = 0; i < len; i++)
            ids[i] = (int32_t)rng_below(1, (uint64_t)d, (uint64_t)i, (uint64_t)(vocab - 1));
        if (!token_shard_writer_add_document(w, ids, (size_t)len, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            token_shard_writer_abort(w);
            free(ids);
            return 1;
        }
    }
    free(ids);
    if (!token_shard_writer_finish(w, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    return 0;
}
