/* Writes the documents of a gpt3d shard as a Megatron indexed dataset
 * (PREFIX.bin + PREFIX.idx) through tests/megatron_fixture.h, independently
 * of the reader under test: each document becomes two sequences (its halves,
 * as --split-sentences would make sentences), so the end-to-end test also
 * sees that a document is the concatenation of its sequences.
 * Usage: write_megatron_fixture SHARD.h5 PREFIX DTYPE_CODE ELEMENT_BYTES */
#include <stdio.h>
#include <stdlib.h>

#include "data/data.h"
#include "megatron_fixture.h"

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s SHARD.h5 PREFIX DTYPE_CODE ELEMENT_BYTES\n", argv[0]);
        return 2;
    }
    char err[1024];
    TokenShard *s = token_shard_open(argv[1], err, sizeof err);
    if (!s) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const int64_t docs = token_shard_num_documents(s), n = token_shard_num_tokens(s);
    const uint64_t *offsets = token_shard_document_offsets(s);
    int32_t *ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
    int64_t *tokens = malloc((size_t)(n > 0 ? n : 1) * sizeof *tokens);
    int32_t *lengths = malloc((size_t)(2 * docs + 1) * sizeof *lengths);
    int64_t *doc_indices = malloc((size_t)(docs + 1) * sizeof *doc_indices);
    if (!token_shard_read(s, 0, (uint64_t)n, ids, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (int64_t i = 0; i < n; i++)
        tokens[i] = ids[i];
    for (int64_t d = 0; d < docs; d++) {
        const int32_t len = (int32_t)(offsets[d + 1] - offsets[d]);
        doc_indices[d] = 2 * d;
        lengths[2 * d] = len / 2;
        lengths[2 * d + 1] = len - len / 2;
    }
    doc_indices[docs] = 2 * docs;
    MegatronFixture f = {(int)(2 * docs), tokens, lengths, (int)(docs + 1), doc_indices};
    megatron_fixture_write(argv[2], &f, atoi(argv[3]), atoi(argv[4]));
    token_shard_close(s);
    free(ids);
    free(tokens);
    free(lengths);
    free(doc_indices);
    return 0;
}
