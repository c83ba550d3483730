/* data/token_ids.h — every token id of a document source checked against
 * its vocabulary when a dataset opens it (internal to data/).
 *
 * Contract. A source whose largest id is outside [0, vocab_size) is refused
 * at start, naming the file, the id and the fix, instead of failing hours in
 * when the sample holding that id is drawn. The largest id comes from what
 * the source knows (a shard's max_token_id attribute); a source without it
 * (a shard without the attribute, a Megatron .bin) is scanned at most once
 * per process (the caller's TokenIdScans) and the result kept under the
 * --data-cache-path directory (when given) for later runs, both keyed by the
 * file's path, size, modification time and shape, so a changed file is
 * scanned again. */
#ifndef GPT3D_DATA_TOKEN_IDS_H
#define GPT3D_DATA_TOKEN_IDS_H

#include <stdbool.h>
#include <stddef.h>

#include "data/data.h"
#include "data/document_source.h"

/* cache_dir and scans may be NULL (with both NULL a source without a known
 * largest id is scanned at every open). *scanned tells whether this call read
 * the tokens. */
bool token_ids_check(DocumentSource *s, const char *cache_dir, TokenIdScans *scans, bool *scanned,
                     char *err, size_t err_size);

#endif
