/* data/document_source.h — where a dataset's documents come from (internal
 * to data/).
 *
 * Contract. A DocumentSource is an ordered list of documents, each a run of
 * token ids, behind one interface whatever stores them: a gpt3d HDF5 token
 * shard, a Megatron .bin/.idx pair read in place, or --mock-data's seeded
 * random documents. The GPTDataset splits, shuffles and samples documents of
 * sources without knowing which kind they are. Every source reports the
 * tokenizer its ids belong to: a shard records its own; a Megatron pair and
 * mock data record none and take the run's (SourceTokenizer), so a run whose
 * tokenizer has no known vocabulary size cannot open them (one error naming
 * --tokenizer-type). */
#ifndef GPT3D_DATA_DOCUMENT_SOURCE_H
#define GPT3D_DATA_DOCUMENT_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct DocumentSource DocumentSource;

/* The run's tokenizer; vocab_size 0 when the run does not know it. */
typedef struct {
    const char *type;
    int64_t vocab_size;
    int64_t eod_token;
} SourceTokenizer;

/* `path` is a file as data_path_parse resolves it: a name ending in .bin or
 * .idx opens the Megatron pair of that prefix, any other an HDF5 shard. */
DocumentSource *document_source_open(const char *path, const SourceTokenizer *run, char *err,
                                     size_t err_size);
/* --mock-data: MOCK_DATA_DOCUMENTS (data.h) documents of 1 to 2 x
 * seq_length tokens, each ending in the run's EOD, every other token uniform
 * in the run's vocabulary; all of it a pure function of (seed, token
 * position). */
DocumentSource *document_source_mock(uint64_t seed, int seq_length, const SourceTokenizer *run,
                                     char *err, size_t err_size);
void document_source_close(DocumentSource *s);

/* The file (the .bin of a pair) or "mock data", for messages. */
const char *document_source_name(const DocumentSource *s);
/* "token shard", "Megatron dataset" or "mock data", for messages. */
const char *document_source_kind(const DocumentSource *s);
const char *document_source_tokenizer_type(const DocumentSource *s);
int64_t document_source_vocab_size(const DocumentSource *s);
int64_t document_source_eod_token(const DocumentSource *s);
int64_t document_source_num_documents(const DocumentSource *s);
int64_t document_source_num_tokens(const DocumentSource *s);
/* documents+1 token offsets, first 0, last the token count. */
const uint64_t *document_source_document_offsets(const DocumentSource *s);
/* The largest id as the source knows it without reading (a shard's
 * max_token_id attribute, mock data's construction); -1 when unknown. */
int64_t document_source_known_max_token_id(const DocumentSource *s);
/* The largest id by reading every token; a Megatron pair stops at the first
 * id outside [0, vocab_size), naming its place. */
bool document_source_scan_max_token_id(DocumentSource *s, int64_t *max_id, char *err,
                                       size_t err_size);
/* Tokens [begin, begin+count) of the concatenated documents; ids outside
 * the vocabulary are an error naming the file. */
bool document_source_read(DocumentSource *s, uint64_t begin, uint64_t count, int32_t *out,
                          char *err, size_t err_size);

#endif
