/* data/data.h — token shards, tokenizers and GPT datasets.
 *
 * Contract.
 * - A token shard is an HDF5 file in the DESIGN format: root attributes
 *   format="gpt3d-tokens", format_version=1, tokenizer_type, vocab_size,
 *   eod_token; /tokens 1-D (uint16 when vocab_size <= 65536, else uint32,
 *   chunked); /document_offsets 1-D uint64 with documents+1 entries, first 0,
 *   last = token count. Readers validate all of it and name the file and the
 *   problem on failure. Writers publish a shard under its final name only
 *   when it is complete (write to a temporary name, then rename).
 * - A GPTDataset is one split (train/valid/test) of the documents of one or
 *   more shards, as Megatron's GPTDataset: the split's documents shuffled per
 *   epoch from the seed, cut into samples of seq_length+1 tokens that cross
 *   document boundaries (consecutive samples share one token), and the
 *   samples of each epoch visited in a shuffled order. Sample k of the
 *   dataset is a pure function of (shards, split, seq_length, seed, k), so
 *   any rank can read any global sample and resume needs only a count.
 * - Errors are returned as messages (err/err_size), never by exiting, so the
 *   caller can stop every rank together. */
#ifndef GPT3D_DATA_H
#define GPT3D_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOKEN_SHARD_FORMAT "gpt3d-tokens"
#define TOKEN_SHARD_FORMAT_VERSION 1

/* ------------------------------------------------------------------ shards */

typedef struct TokenShard TokenShard;

TokenShard *token_shard_open(const char *path, char *err, size_t err_size);
void token_shard_close(TokenShard *s);
const char *token_shard_path(const TokenShard *s);
const char *token_shard_tokenizer_type(const TokenShard *s);
int64_t token_shard_vocab_size(const TokenShard *s);
int64_t token_shard_eod_token(const TokenShard *s);
int64_t token_shard_num_documents(const TokenShard *s);
int64_t token_shard_num_tokens(const TokenShard *s);
/* documents+1 offsets into /tokens, held in memory. */
const uint64_t *token_shard_document_offsets(const TokenShard *s);
/* The largest token id, as the writer recorded it in the root attribute
 * max_token_id (tools/preprocess_data writes it); -1 when the shard has none. */
int64_t token_shard_stored_max_token_id(const TokenShard *s);
/* The largest token id by reading every token (-1 for an empty shard). */
bool token_shard_scan_max_token_id(TokenShard *s, int64_t *max_id, char *err, size_t err_size);
/* Reads tokens [begin, begin+count) by one hyperslab read. */
bool token_shard_read(TokenShard *s, uint64_t begin, uint64_t count, int32_t *out, char *err,
                      size_t err_size);

typedef struct TokenShardWriter TokenShardWriter;

/* Starts writing `path` (as path + ".tmp.<pid>" until finish). */
TokenShardWriter *token_shard_writer_create(const char *path, const char *tokenizer_type,
                                            int64_t vocab_size, int64_t eod_token, char *err,
                                            size_t err_size);
bool token_shard_writer_add_document(TokenShardWriter *w, const int32_t *tokens, size_t count,
                                     char *err, size_t err_size);
uint64_t token_shard_writer_num_tokens(const TokenShardWriter *w);
uint64_t token_shard_writer_num_documents(const TokenShardWriter *w);
/* Writes the offsets, closes and renames to the final path. */
bool token_shard_writer_finish(TokenShardWriter *w, char *err, size_t err_size);
/* Closes and deletes the temporary file; the final path is never touched. */
void token_shard_writer_abort(TokenShardWriter *w);

/* ------------------------------------------------ Megatron indexed datasets */

/* Megatron-LM's indexed dataset (megatron/core/datasets/indexed_dataset.py),
 * read in place: PREFIX.idx is the MMIDIDX index (the 9-byte magic
 * "MMIDIDX\0\0", version <Q> = 1, the token dtype code <B> of Megatron's
 * DType: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32,
 * 8 uint16; the sequence count <Q>; the document-index count <Q>; then int32
 * sequence lengths, int64 byte pointers into PREFIX.bin and int64 document
 * indices: sequence boundaries, first 0, non-decreasing, last = the sequence
 * count; a multimodal index appends one int8 mode per sequence, ignored) and
 * PREFIX.bin holds the tokens. Both files are mapped (mmap), never copied.
 * A document is the concatenation of its sequences (the sentences of
 * Megatron's --split-sentences), so the pair and its conversion by
 * tools/convert_megatron_dataset hold the same documents and tokens. Opening
 * checks the header, every count and index against the file sizes and every
 * sequence against the .bin (an index of another version, a float or
 * unknown dtype, a .bin shorter or longer than its index says: one error
 * naming the file); the files carry no tokenizer, so token ids are checked
 * against a vocabulary by megatron_dataset_check_token_ids. This is the one
 * reader of the format: the dataset and the converter both use it. */
typedef struct MegatronDataset MegatronDataset;

MegatronDataset *megatron_dataset_open(const char *prefix, char *err, size_t err_size);
void megatron_dataset_close(MegatronDataset *m);
const char *megatron_dataset_idx_path(const MegatronDataset *m);
const char *megatron_dataset_bin_path(const MegatronDataset *m);
const char *megatron_dataset_dtype_name(const MegatronDataset *m);
int64_t megatron_dataset_num_sequences(const MegatronDataset *m);
int64_t megatron_dataset_num_documents(const MegatronDataset *m);
int64_t megatron_dataset_num_tokens(const MegatronDataset *m);
/* documents+1 offsets into the stream of all tokens, in memory. */
const uint64_t *megatron_dataset_document_offsets(const MegatronDataset *m);
/* Tokens [begin, begin+count) of that stream as int32 (an id outside int32
 * is an error naming the .bin). Safe from several threads at once. */
bool megatron_dataset_read(const MegatronDataset *m, uint64_t begin, uint64_t count, int32_t *out,
                           char *err, size_t err_size);
/* Reads every token: the first id outside [0, vocab_size) is an error naming
 * the .bin, the sequence and the position; else *max_id is the largest id
 * (-1 when there are no tokens). */
bool megatron_dataset_check_token_ids(const MegatronDataset *m, int64_t vocab_size, int64_t *max_id,
                                      char *err, size_t err_size);

/* -------------------------------------------------------------- tokenizers */

typedef struct Tokenizer Tokenizer;

/* What selects and configures a tokenizer: the fields of Megatron's flags
 * (data/tokenizer_flags.h puts them in a program's flag table). */
typedef struct {
    char *tokenizer_type;   /* see TOKENIZER_TYPES */
    char *vocab_file;       /* GPT2BPETokenizer: vocab.json */
    char *merge_file;       /* GPT2BPETokenizer: merges.txt */
    char *tokenizer_model;  /* HuggingFaceTokenizer: tokenizer.json; TikTokenizer: ranks file */
    char *tiktoken_pattern; /* TikTokenizer: "v1" or "v2" (NULL: v2) */
    int tiktoken_num_special_tokens; /* TikTokenizer: ids below it are special (Megatron: 1000) */
    int64_t vocab_size;     /* NullTokenizer: required; TikTokenizer: cut the ranks (0: all) */
} TokenizerOptions;

#define TOKENIZER_TYPES \
    "ByteTokenizer, GPT2BPETokenizer, HuggingFaceTokenizer, TikTokenizer or NullTokenizer"

/* - ByteTokenizer: ids 0-255 are bytes, 256 is EOD, vocab 257.
 * - GPT2BPETokenizer: GPT-2's vocab.json + merges.txt.
 * - HuggingFaceTokenizer: a BPE tokenizer.json (data/tokenizer_hf.h); ids
 *   as Hugging Face's `tokenizers` encode(text) with its special tokens
 *   (a Llama 2 file's <s> first); EOD = the eos_token of the
 *   tokenizer_config.json beside it.
 * - TikTokenizer: Megatron's: a tiktoken ranks file, ids = rank +
 *   num_special_tokens, specials <unk> <s> </s> <mask> <pad> <cls> <sep>
 *   <SPECIAL_7>... below; EOD = </s> (2).
 * - NullTokenizer: the text is whitespace-separated ids; EOD = vocab_size - 1.
 * NULL and a message naming the flag or file and the fix on bad input. */
Tokenizer *tokenizer_open(const TokenizerOptions *o, char *err, size_t err_size);
/* True for the names tokenizer_open() knows (TOKENIZER_TYPES). */
bool tokenizer_type_known(const char *type);
/* tokenizer_open with only type, vocab_file and merge_file set. */
Tokenizer *tokenizer_create(const char *type, const char *vocab_file, const char *merge_file,
                            char *err, size_t err_size);
void tokenizer_free(Tokenizer *t);
/* The vocabulary size and EOD id of tokenizer `type` known without its
 * files (ByteTokenizer 257/256, GPT2BPETokenizer 50257/50256); false for a
 * type whose vocabulary only its files tell. Data that records no tokenizer
 * (Megatron .bin/.idx, --mock-data) is read with these. */
bool tokenizer_builtin_vocabulary(const char *type, int64_t *vocab_size, int64_t *eod_token);
const char *tokenizer_type(const Tokenizer *t);
int64_t tokenizer_vocab_size(const Tokenizer *t);
int32_t tokenizer_eod(const Tokenizer *t);
/* Appends the ids of text[0, len) to *ids (realloc'd; *count and *cap track it).
 * text is one whole document or prompt: a tokenizer whose post-processor
 * adds tokens (Llama 2's <s>) adds them once per call.
 * Thread-safe for concurrent calls on one tokenizer. */
void tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                      size_t *count, size_t *cap);
/* Bytes of the given ids, NUL-terminated, caller frees. */
char *tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t count);

/* ---------------------------------------------------------------- datasets */

typedef enum { SPLIT_TRAIN = 0, SPLIT_VALID = 1, SPLIT_TEST = 2 } SplitKind;

/* The largest token id of each shard that had to be scanned (no
 * max_token_id attribute), kept by the caller for the life of its process
 * so one shard is scanned at most once however many datasets (splits, blend
 * components) open it. Keyed like the --data-cache-path entry: path, size,
 * modification time and shape, so a rewritten file is scanned again. */
typedef struct TokenIdScans TokenIdScans;
TokenIdScans *token_id_scans_new(void);
void token_id_scans_free(TokenIdScans *scans);

typedef struct {
    const char *const *paths; /* files as data_path_parse resolves them: a name ending in
                                 .bin or .idx is a Megatron pair, any other an HDF5 shard */
    int num_paths;
    const char *split; /* "969,30,1" (Megatron's --split; quotes around it or its
                          parts, as bash arrays leave them, are ignored) */
    int seq_length;
    uint64_t seed;
    /* When non-NULL / > 0, every shard must match (clear error otherwise). */
    const char *expected_tokenizer_type;
    int64_t expected_vocab_size;
    /* When non-NULL, the per-epoch indices are read from / written to this
     * directory (--data-cache-path), keyed by a hash of what they depend on. */
    const char *cache_dir;
    /* The flag the paths came from, for messages; NULL means "--data-path". */
    const char *data_path_flag;
    TokenIdScans *scans; /* NULL: a shard without max_token_id is scanned at every open */
    /* The run's tokenizer (type expected_tokenizer_type) for data that
     * records none: a Megatron pair and mock data are read as made with it;
     * vocab size 0 (unknown) refuses them, naming --tokenizer-type. */
    int64_t tokenizer_vocab_size;
    int64_t tokenizer_eod_token;
    /* Megatron's --mock-data: `paths` are ignored and the documents are
     * seeded random tokens (MOCK_DATA_DOCUMENTS documents of 1 to
     * 2 x seq_length tokens, each ending in EOD), a pure function of seed
     * and position, split and sampled like any other data. */
    bool mock_data;
    /* When non-NULL, set to whether a failure is the split holding fewer
     * tokens than one sample (err still says so), which a caller may take
     * for an absent split (the test split, as Megatron's do_test). */
    bool *too_short;
} GPTDatasetConfig;

/* Documents of --mock-data (Megatron's MockGPTDataset has as many). */
#define MOCK_DATA_DOCUMENTS 100000

typedef struct GPTDataset GPTDataset;

/* Opens the shards and builds the index of one split. A split with too few
 * tokens for one sample is an error naming --split / --data-path. */
GPTDataset *gpt_dataset_create(const GPTDatasetConfig *cfg, SplitKind split, char *err,
                               size_t err_size);
void gpt_dataset_free(GPTDataset *ds);
/* Samples in one epoch of this split. */
int64_t gpt_dataset_samples_per_epoch(const GPTDataset *ds);
int64_t gpt_dataset_num_documents(const GPTDataset *ds);
int64_t gpt_dataset_num_tokens(const GPTDataset *ds);
/* Global sample k (any k >= 0; epoch = k / samples_per_epoch) into
 * out[seq_length + 1]. Returns false with a message on a read error. */
bool gpt_dataset_get_sample(GPTDataset *ds, int64_t k, int32_t *out, char *err, size_t err_size);
/* The position of global sample k in the concatenated stream of the split's
 * epoch-shuffled documents: epoch and start offset in tokens (for tests). */
void gpt_dataset_sample_position(GPTDataset *ds, int64_t k, int64_t *epoch, int64_t *start_token);
/* What every shard of the dataset was made with (they all agree). */
const char *gpt_dataset_tokenizer_type(const GPTDataset *ds);
int64_t gpt_dataset_vocab_size(const GPTDataset *ds);
int64_t gpt_dataset_eod_token(const GPTDataset *ds);
int gpt_dataset_num_shards(const GPTDataset *ds);
const char *gpt_dataset_shard_path(const GPTDataset *ds, int shard);

/* How a dataset obtained its indices, for logs and tests. A piece is one
 * epoch of a GPTDataset, or one extension of a blend's block table. */
typedef struct {
    int64_t built;          /* computed from scratch */
    int64_t loaded;         /* read from the cache directory */
    int64_t stored;         /* written to the cache directory */
    int64_t rejected;       /* cache files found corrupt or stale (then rebuilt) */
    int64_t store_failures; /* cache writes that failed (the run goes on without) */
    int64_t shards_scanned; /* shards read whole for their largest token id */
} DataIndexStats;

DataIndexStats gpt_dataset_index_stats(const GPTDataset *ds);

/* -------------------------------------------------------------- data paths */

/* One component of a --data-path: the files its pattern(s) matched. */
typedef struct {
    char *pattern;  /* the words it came from, for messages and descriptions */
    double weight;  /* normalised: the weights of a DataPath sum to 1 */
    char **files;   /* per word in order: its file(s), sorted; a Megatron pair as PREFIX.bin */
    int num_files;
    char *resolved; /* how prefix words resolved ("x -> x.h5"), for the run log; NULL: none */
} DataPathComponent;

typedef struct {
    DataPathComponent *components;
    int num_components;
    bool weighted;
} DataPath;

/* Parses the words of a --data-path style flag (`flag` names it in
 * messages). A word is a glob when it holds * ? or [ (its matches sorted,
 * a matched .idx standing for its pair's .bin), else a file or a
 * Megatron-style prefix, resolved in this order:
 *   1. an existing file of that name: an HDF5 shard, or with a .bin or .idx
 *      name the Megatron pair of that prefix;
 *   2. PREFIX.bin + PREFIX.idx, the Megatron pair, read in place: what the
 *      prefix means to Megatron, and the original any PREFIX.h5 would have
 *      been converted from, so it wins; the run log says so when a PREFIX.h5
 *      or numbered shards exist too;
 *   3. PREFIX.h5 (tools/preprocess_data without --shard-size-tokens);
 *   4. PREFIX_00000.h5, PREFIX_00001.h5, ... (with --shard-size-tokens),
 *      which must be numbered from 0 without gaps.
 * Both 3 and 4 existing is refused as ambiguous (name the file), and half a
 * Megatron pair is refused naming the missing file. A word ending in .h5,
 * .bin or .idx is a file name, never a prefix. A word that resolves to
 * nothing is one error listing every path tried and naming
 * tools/preprocess_data and tools/convert_megatron_dataset.
 * Without weights (`a.h5 web-*.h5`) every matched file belongs to one
 * component, whose documents are concatenated in order. With weights
 * (`0.7 web-*.h5 0.3 books.h5`: the first word is a number) the words are
 * WEIGHT PATTERN pairs, each pattern one component of a blend, the weights
 * normalised. An odd word count, a weight that is not a positive number or a
 * pattern matching no file is an error naming the flag. */
bool data_path_parse(const char *flag, const char *const *words, int num_words, DataPath *out,
                     char *err, size_t err_size);
void data_path_free(DataPath *p);

/* -------------------------------------------------------- blended datasets */

/* Where a run's data comes from: either data_path, whose documents are split
 * by `split`, or per-split paths, each used whole for its split (Megatron's
 * --train-data-path / --valid-data-path / --test-data-path); giving both
 * kinds is an error. Every path list takes the data_path_parse syntax. */
typedef struct {
    const char *const *data_path;
    int data_path_count;
    const char *const *train_data_path;
    int train_data_path_count;
    const char *const *valid_data_path;
    int valid_data_path_count;
    const char *const *test_data_path;
    int test_data_path_count;
    const char *split; /* --split, used with data_path only */
    int seq_length;
    uint64_t seed;
    const char *expected_tokenizer_type; /* NULL / 0: not checked */
    int64_t expected_vocab_size;
    const char *cache_dir; /* --data-cache-path; NULL: no index cache */
    TokenIdScans *scans;   /* passed to every component's GPTDatasetConfig */
    int64_t tokenizer_vocab_size; /* as GPTDatasetConfig */
    int64_t tokenizer_eod_token;
    bool mock_data; /* --mock-data: one mock component for every split; no paths allowed */
    bool *too_short; /* as GPTDatasetConfig, for any component */
} GPTDataConfig;

/* Megatron's BlendedDataset over one GPTDataset per component (each over
 * its component's files, split the same way). Global sample k goes to the
 * component whose realised share lags its weight most (Megatron's greedy
 * rule, see blended_dataset.c) and is that component's next local sample.
 * With one component, sample k is the GPTDataset's sample k. Like
 * GPTDataset, sample k is a pure function of the inputs and k, and
 * a dataset is not safe to use from several threads at once. */
typedef struct BlendedDataset BlendedDataset;

BlendedDataset *blended_dataset_create(const GPTDataConfig *cfg, SplitKind split, char *err,
                                       size_t err_size);
void blended_dataset_free(BlendedDataset *ds);
/* Global sample k (any k >= 0) into out[seq_length + 1]. Test hook: with
 * GPT3D_TEST_FAIL_DATA_READ_AT=K set when the training split is created,
 * its sample K fails to read (as a damaged shard would), so a test can
 * see how a run stops on a data error mid-step. */
bool blended_dataset_get_sample(BlendedDataset *ds, int64_t k, int32_t *out, char *err,
                                size_t err_size);
/* The component serving global sample k and its index in that component. */
void blended_dataset_sample_source(BlendedDataset *ds, int64_t k, int *component,
                                   int64_t *local_index);
int blended_dataset_num_components(const BlendedDataset *ds);
double blended_dataset_weight(const BlendedDataset *ds, int component);
GPTDataset *blended_dataset_component(const BlendedDataset *ds, int component);
/* One line for the run log, e.g. "train: 0.7000 x web-*.h5 (3 shards, ...); ...". */
const char *blended_dataset_description(const BlendedDataset *ds);
const char *blended_dataset_tokenizer_type(const BlendedDataset *ds);
int64_t blended_dataset_vocab_size(const BlendedDataset *ds);
int64_t blended_dataset_eod_token(const BlendedDataset *ds);
/* Sums over the components. */
int64_t blended_dataset_num_documents(const BlendedDataset *ds);
int64_t blended_dataset_num_tokens(const BlendedDataset *ds);
/* The blend's own index pieces plus those of its components. */
DataIndexStats blended_dataset_index_stats(const BlendedDataset *ds);

/* ----------------------------------------------------- document masking
 * Megatron's per-sample masks for documents packed into one sample
 * (--eod-mask-loss, --reset-position-ids, --reset-attention-mask, its
 * GPTDataset's rules). A document ends with its EOD token, which belongs to
 * it; the token after an EOD starts the next document. For the T input
 * tokens of a sample and its T targets (the inputs shifted by one):
 * - eod_mask_loss: a position whose input is EOD predicts the first token
 *   of an unrelated document: its target becomes negative (the backend's
 *   LOSS_IGNORED_TARGET), out of the loss and its count;
 * - reset_position_ids: position_ids[t] = t - (first position of t's
 *   document); otherwise t;
 * - reset_attention_mask: key_start[t] = first position of t's document,
 *   so attention never crosses a document boundary; otherwise 0. */
typedef struct {
    bool eod_mask_loss, reset_position_ids, reset_attention_mask;
    int64_t eod_token;
} DocumentMasking;

/* True when any of the three switches is on. */
bool document_masking_on(const DocumentMasking *dm);
/* Applies the masks to one sample; position_ids and key_start get T
 * entries each. Returns how many targets stay in the loss. */
int document_masks_apply(const DocumentMasking *dm, const int32_t *tokens, int32_t *targets,
                         int T, int32_t *position_ids, int32_t *key_start);

#endif
