/* tools/convert_megatron_dataset — a Megatron indexed dataset to a gpt3d shard.
 *
 * Reads PREFIX.idx and PREFIX.bin as Megatron-LM's indexed_dataset.py writes
 * them (the MMIDIDX index: a 9-byte magic "MMIDIDX\0\0", version <Q> = 1, the
 * token dtype code <B>, the sequence count <Q>, the count <Q> of document
 * indices, then int32 sequence lengths, int64 byte pointers into the .bin, and
 * int64 document indices: sequence boundaries, first 0, last = the sequence
 * count; a multimodal index appends one int8 mode per sequence, ignored here).
 * Each Megatron document (the concatenation of its sequences, e.g. the
 * sentences of --split-sentences) becomes one gpt3d document, in order, so
 * the shard holds exactly the source's documents and tokens.
 *
 * Streaming: the index arrays are read through small windows and the tokens
 * one bounded chunk at a time, so memory is a few MB plus the largest
 * document (the shard writer takes a document whole). Every count, pointer
 * and id is checked against the file sizes and the vocabulary before use;
 * on any error the partial output is deleted and the message names the file.
 * Exit status: 0 converted, 2 bad usage or bad input. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
#define INDEX_HEADER_BYTES 34 /* magic 9 + version 8 + dtype 1 + two counts 8 + 8 */
#define INDEX_WINDOW 65536    /* index entries read at a time */
#define TOKEN_CHUNK 1048576   /* tokens read from the .bin at a time */

static const char MAGIC[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};

static void set_error(char *err, size_t err_size, const char *fmt, ...) GPT3D_PRINTF(3, 4);
static void set_error(char *err, size_t err_size, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(err, err_size, fmt, args);
    va_end(args);
}

/* ------------------------------------------------------------ dtypes */

typedef struct {
    int code;
    const char *name;
    int size;
    bool integer;
} TokenDType;

/* Megatron's DType enum, by value. */
static const TokenDType DTYPES[] = {
    {1, "uint8", 1, true},    {2, "int8", 1, true},   {3, "int16", 2, true},
    {4, "int32", 4, true},    {5, "int64", 8, true},  {6, "float64", 8, false},
    {7, "float32", 4, false}, {8, "uint16", 2, true},
};

static const TokenDType *dtype_of_code(int code) {
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (DTYPES[i].code == code) return &DTYPES[i];
    return NULL;
}

/* Little-endian, as numpy writes on every platform Megatron runs on. */
static uint64_t load_le(const unsigned char *p, int size) {
    uint64_t v = 0;
    for (int i = size - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int64_t token_value(const unsigned char *p, const TokenDType *t) {
    uint64_t raw = load_le(p, t->size);
    switch (t->code) {
    case 2: return (int8_t)raw;
    case 3: return (int16_t)raw;
    case 4: return (int32_t)raw;
    case 5: return (int64_t)raw;
    default: return (int64_t)raw; /* unsigned */
    }
}

/* ------------------------------------------------------------ files */

typedef struct {
    const char *path;
    int fd;
    uint64_t size;
} InputFile;

static bool open_input(InputFile *f, const char *path, char *err, size_t err_size) {
    f->path = path;
    f->fd = open(path, O_RDONLY);
    struct stat st;
    if (f->fd < 0 || fstat(f->fd, &st) != 0) {
        set_error(err, err_size,
                  "cannot open '%s': %s (--input names PREFIX of PREFIX.bin and "
                  "PREFIX.idx)",
                  path, strerror(errno));
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        set_error(err, err_size, "'%s' is not a regular file", path);
        return false;
    }
    f->size = (uint64_t)st.st_size;
    return true;
}

static void close_input(InputFile *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
}

static bool read_at(const InputFile *f, uint64_t offset, void *buf, size_t bytes, char *err,
                    size_t err_size) {
    unsigned char *dst = buf;
    while (bytes > 0) {
        ssize_t got = pread(f->fd, dst, bytes, (off_t)offset);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            set_error(err, err_size, "'%s': read failed at byte %" PRIu64 ": %s", f->path, offset,
                      got < 0 ? strerror(errno) : "unexpected end of file");
            return false;
        }
        dst += got;
        offset += (uint64_t)got;
        bytes -= (size_t)got;
    }
    return true;
}

/* ------------------------------------------------------------ index */

/* A window over one little-endian array of the .idx; reads are monotone in
 * practice, so each entry is read from disk about once. */
typedef struct {
    const InputFile *file;
    uint64_t base; /* byte offset of entry 0 */
    int elem_size;
    uint64_t count;
    uint64_t first; /* entry held in buf[0] */
    uint64_t held;
    unsigned char *buf;
} IndexArray;

static void index_array_init(IndexArray *a, const InputFile *f, uint64_t base, int elem_size,
                             uint64_t count) {
    *a = (IndexArray){.file = f, .base = base, .elem_size = elem_size, .count = count};
    a->buf = xmalloc((size_t)INDEX_WINDOW * (size_t)elem_size);
}

static bool index_array_get(IndexArray *a, uint64_t i, uint64_t *out, char *err, size_t err_size) {
    GPT3D_CHECK(i < a->count, "index entry %" PRIu64 " beyond %" PRIu64, i, a->count);
    if (i < a->first || i >= a->first + a->held) {
        uint64_t n = a->count - i < INDEX_WINDOW ? a->count - i : INDEX_WINDOW;
        if (!read_at(a->file, a->base + i * (uint64_t)a->elem_size, a->buf,
                     (size_t)n * (size_t)a->elem_size, err, err_size))
            return false;
        a->first = i;
        a->held = n;
    }
    *out = load_le(a->buf + (i - a->first) * (uint64_t)a->elem_size, a->elem_size);
    return true;
}

typedef struct {
    InputFile idx, bin;
    const TokenDType *dtype;
    uint64_t num_sequences, num_doc_indices;
    IndexArray lengths, pointers, doc_indices;
} MegatronDataset;

static bool check_index_size(const MegatronDataset *d, char *err, size_t err_size) {
    const uint64_t n = d->num_sequences, m = d->num_doc_indices, size = d->idx.size;
    /* Bound the counts by the file size first so the products cannot overflow. */
    if (n > size / 12 || m > size / 8) {
        set_error(err, err_size,
                  "'%s' is truncated: its header counts %" PRIu64 " sequences and %" PRIu64
                  " document indices, more than its %" PRIu64 " bytes can hold",
                  d->idx.path, n, m, size);
        return false;
    }
    const uint64_t expected = INDEX_HEADER_BYTES + 12 * n + 8 * m;
    if (size == expected || size == expected + n) return true; /* + multimodal modes */
    set_error(err, err_size,
              "'%s' %s: %" PRIu64 " sequences and %" PRIu64 " document indices need %" PRIu64
              " bytes (or %" PRIu64 " with sequence modes) but the file has %" PRIu64,
              d->idx.path, size < expected ? "is truncated" : "has unexpected trailing bytes", n, m,
              expected, expected + n, size);
    return false;
}

static bool read_index_header(MegatronDataset *d, char *err, size_t err_size) {
    unsigned char h[INDEX_HEADER_BYTES];
    if (d->idx.size < INDEX_HEADER_BYTES) {
        set_error(err, err_size,
                  "'%s' is truncated: %" PRIu64 " bytes, shorter than the %d-byte "
                  "MMIDIDX header",
                  d->idx.path, d->idx.size, INDEX_HEADER_BYTES);
        return false;
    }
    if (!read_at(&d->idx, 0, h, sizeof h, err, err_size)) return false;
    if (memcmp(h, MAGIC, sizeof MAGIC) != 0) {
        set_error(err, err_size,
                  "'%s' is not a Megatron indexed dataset index: bad magic (want "
                  "\"MMIDIDX\\x00\\x00\"; the legacy 'lazy'/'cached' formats are not supported)",
                  d->idx.path);
        return false;
    }
    uint64_t version = load_le(h + 9, 8);
    if (version != 1) {
        set_error(err, err_size, "'%s': index version %" PRIu64 " is not supported (want 1)",
                  d->idx.path, version);
        return false;
    }
    d->dtype = dtype_of_code(h[17]);
    if (!d->dtype) {
        set_error(err, err_size, "'%s': unknown token dtype code %d (Megatron's codes are 1-8)",
                  d->idx.path, h[17]);
        return false;
    }
    if (!d->dtype->integer) {
        set_error(err, err_size, "'%s': the tokens are %s (dtype code %d), not integer ids",
                  d->idx.path, d->dtype->name, d->dtype->code);
        return false;
    }
    d->num_sequences = load_le(h + 18, 8);
    d->num_doc_indices = load_le(h + 26, 8);
    return check_index_size(d, err, err_size);
}

static bool open_dataset(MegatronDataset *d, const char *prefix, char *err, size_t err_size) {
    memset(d, 0, sizeof *d);
    d->idx.fd = d->bin.fd = -1;
    size_t n = strlen(prefix) + 8;
    char *idx_path = xmalloc(n), *bin_path = xmalloc(n);
    snprintf(idx_path, n, "%s.idx", prefix);
    snprintf(bin_path, n, "%s.bin", prefix);
    if (!open_input(&d->idx, idx_path, err, err_size) ||
        !open_input(&d->bin, bin_path, err, err_size) || !read_index_header(d, err, err_size))
        return false;
    if (d->num_doc_indices == 0) {
        set_error(err, err_size,
                  "'%s' holds no document indices (a valid index has at least the "
                  "leading 0)",
                  d->idx.path);
        return false;
    }
    const uint64_t lengths_at = INDEX_HEADER_BYTES;
    const uint64_t pointers_at = lengths_at + 4 * d->num_sequences;
    const uint64_t docs_at = pointers_at + 8 * d->num_sequences;
    index_array_init(&d->lengths, &d->idx, lengths_at, 4, d->num_sequences);
    index_array_init(&d->pointers, &d->idx, pointers_at, 8, d->num_sequences);
    index_array_init(&d->doc_indices, &d->idx, docs_at, 8, d->num_doc_indices);
    return true;
}

static void close_dataset(MegatronDataset *d) {
    free(d->lengths.buf);
    free(d->pointers.buf);
    free(d->doc_indices.buf);
    close_input(&d->idx);
    close_input(&d->bin);
    free((char *)d->idx.path);
    free((char *)d->bin.path);
}

/* Document boundary k, checked: the first is 0, they never decrease, and
 * the last is the sequence count. */
static bool document_boundary(MegatronDataset *d, uint64_t k, uint64_t previous, uint64_t *out,
                              char *err, size_t err_size) {
    if (!index_array_get(&d->doc_indices, k, out, err, err_size)) return false;
    const uint64_t last = d->num_doc_indices - 1;
    const char *problem = NULL;
    if (k == 0 && *out != 0)
        problem = "the first must be 0";
    else if ((int64_t)*out < 0 || *out > d->num_sequences)
        problem = "it is beyond the sequences";
    else if (*out < previous)
        problem = "the indices decrease";
    else if (k == last && *out != d->num_sequences)
        problem = "the last must equal the sequence count";
    if (!problem) return true;
    set_error(err, err_size,
              "'%s': document index %" PRIu64 " is %" PRId64 " but %s (%" PRIu64 " sequences)",
              d->idx.path, k, (int64_t)*out, problem, d->num_sequences);
    return false;
}

/* ------------------------------------------------------------ tokens */

typedef struct {
    int32_t *ids;
    size_t count, cap;
} Document;

static void document_reserve(Document *doc, size_t extra) {
    if (doc->count + extra <= doc->cap) return;
    size_t cap = doc->cap ? doc->cap : 4096;
    while (cap < doc->count + extra)
        cap *= 2;
    doc->ids = xrealloc(doc->ids, cap * sizeof *doc->ids);
    doc->cap = cap;
}

static bool sequence_extent(MegatronDataset *d, uint64_t s, uint64_t *pointer, uint64_t *length,
                            char *err, size_t err_size) {
    if (!index_array_get(&d->lengths, s, length, err, err_size) ||
        !index_array_get(&d->pointers, s, pointer, err, err_size))
        return false;
    const int64_t len = (int32_t)*length, ptr = (int64_t)*pointer;
    const uint64_t bytes = (uint64_t)len * (uint64_t)d->dtype->size;
    if (len < 0 || ptr < 0 || (uint64_t)ptr > d->bin.size || bytes > d->bin.size - (uint64_t)ptr) {
        set_error(err, err_size,
                  "sequence %" PRIu64 " of '%s' lies outside '%s': pointer %" PRId64
                  ", length %" PRId64 " %s tokens, but the .bin has %" PRIu64 " bytes",
                  s, d->idx.path, d->bin.path, ptr, len, d->dtype->name, d->bin.size);
        return false;
    }
    *length = (uint64_t)len;
    return true;
}

/* Appends sequence s's tokens to doc, chunk by chunk, checking each id. */
static bool append_sequence(MegatronDataset *d, uint64_t s, int64_t vocab_size, Document *doc,
                            unsigned char *chunk, char *err, size_t err_size) {
    uint64_t pointer, length;
    if (!sequence_extent(d, s, &pointer, &length, err, err_size)) return false;
    const int size = d->dtype->size;
    for (uint64_t done = 0; done < length;) {
        size_t n = length - done < TOKEN_CHUNK ? (size_t)(length - done) : TOKEN_CHUNK;
        if (!read_at(&d->bin, pointer + done * (uint64_t)size, chunk, n * (size_t)size, err,
                     err_size))
            return false;
        document_reserve(doc, n);
        for (size_t i = 0; i < n; i++) {
            int64_t id = token_value(chunk + i * (size_t)size, d->dtype);
            if (id < 0 || id >= vocab_size) {
                set_error(err, err_size,
                          "'%s': token %" PRIu64 " of sequence %" PRIu64 " is %" PRId64
                          ", outside the vocabulary [0, %" PRId64 ") (check --vocab-size and "
                          "--tokenizer-type)",
                          d->bin.path, done + i, s, id, vocab_size);
                return false;
            }
            doc->ids[doc->count++] = (int32_t)id;
        }
        done += n;
    }
    return true;
}

typedef struct {
    uint64_t documents, sequences, tokens;
} ConvertStats;

static bool convert(MegatronDataset *d, TokenShardWriter *w, int64_t vocab_size,
                    ConvertStats *stats, char *err, size_t err_size) {
    Document doc = {0};
    unsigned char *chunk = xmalloc((size_t)TOKEN_CHUNK * 8);
    uint64_t begin = 0;
    bool ok = document_boundary(d, 0, 0, &begin, err, err_size);
    for (uint64_t k = 1; ok && k < d->num_doc_indices; k++) {
        uint64_t end;
        ok = document_boundary(d, k, begin, &end, err, err_size);
        doc.count = 0;
        for (uint64_t s = begin; ok && s < end; s++)
            ok = append_sequence(d, s, vocab_size, &doc, chunk, err, err_size);
        ok = ok && token_shard_writer_add_document(w, doc.ids, doc.count, err, err_size);
        stats->sequences += end - begin;
        begin = end;
    }
    stats->documents = token_shard_writer_num_documents(w);
    stats->tokens = token_shard_writer_num_tokens(w);
    free(chunk);
    free(doc.ids);
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
    const bool gpt2 = !known && !strcmp(o->tokenizer_type, "GPT2BPETokenizer");
    const bool bytes = !known && !strcmp(o->tokenizer_type, "ByteTokenizer");
    if (!flags_was_set(p, "vocab-size") && !known) {
        if (!gpt2 && !bytes)
            gpt3d_fail_user("--tokenizer-type %s has no known vocabulary size; give --vocab-size "
                            "and --eod-token, or the tokenizer's --tokenizer-model",
                            o->tokenizer_type);
        o->vocab_size = gpt2 ? 50257 : 257;
    }
    if (!flags_was_set(p, "eod-token") && !known) {
        if (!gpt2 && !bytes)
            gpt3d_fail_user("--tokenizer-type %s has no known end-of-document id; give "
                            "--eod-token",
                            o->tokenizer_type);
        o->eod_token = gpt2 ? 50256 : 256;
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
    MegatronDataset d;
    if (!open_dataset(&d, o.input, err, sizeof err)) {
        close_dataset(&d);
        gpt3d_fail_user("%s", err);
    }
    TokenShardWriter *w = token_shard_writer_create(o.output, o.tokenizer_type, o.vocab_size,
                                                    o.eod_token, err, sizeof err);
    if (!w) {
        close_dataset(&d);
        gpt3d_fail_user("--output: %s", err);
    }
    ConvertStats stats = {0};
    bool ok = convert(&d, w, o.vocab_size, &stats, err, sizeof err);
    if (!ok)
        token_shard_writer_abort(w);
    else
        ok = token_shard_writer_finish(w, err, sizeof err);
    if (!ok) {
        close_dataset(&d);
        gpt3d_fail_user("%s (nothing was written to '%s')", err, o.output);
    }
    printf("converted %s.{idx,bin} (%s tokens): %" PRIu64 " documents, %" PRIu64
           " sequences, %" PRIu64 " tokens -> %s\n",
           o.input, d.dtype->name, stats.documents, stats.sequences, stats.tokens, o.output);
    close_dataset(&d);
    flags_free(&parser, &o);
    return 0;
}
