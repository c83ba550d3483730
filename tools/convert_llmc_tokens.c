/* tools/convert_llmc_tokens — llm.c token files to a gpt3d shard.
 *
 * An llm.c token file (dev/data/data_common.py, read by llmc/dataloader.h)
 * is a header of 256 little-endian int32 — magic 20240520, version 1, the
 * token count — followed by that many uint16 GPT-2 ids. llm.c's preprocessing
 * puts the end-of-text token (50256) BEFORE every document and cuts its
 * shards at a fixed token count, mid-document.
 *
 * Documents: the inputs are read in order as one token stream, and a new
 * document starts at every end-of-text token, which stays its first token, as
 * llm.c wrote it. The shard's token stream is therefore byte-for-byte the
 * concatenation of the inputs, a document cut between two llm.c shards is
 * whole again, and tokens before the very first end-of-text (a file that
 * starts mid-document) form a document of their own.
 *
 * Streaming: tokens are read in bounded chunks; memory is one chunk plus the
 * current document. On any error the partial output is deleted.
 * Exit status: 0 converted, 2 bad usage or bad input. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/errors.h"
#include "core/flags.h"
#include "data/data.h"

typedef struct {
    StringList input;
    char *output, *tokenizer_type;
    int64_t vocab_size, eod_token;
} Options;

static const FlagSpec FLAGS[] = {
    {"input", FLAG_LIST, offsetof(Options, input), NULL, "FILE.bin",
     "llm.c token files (e.g. fineweb_train_000001.bin), converted in the order given into one "
     "shard",
     "input", true},
    {"output", FLAG_STRING, offsetof(Options, output), NULL, "FILE.h5",
     "the gpt3d token shard to write (published only when complete)", "output", true},
    {"tokenizer-type", FLAG_STRING, offsetof(Options, tokenizer_type), "GPT2BPETokenizer", "TYPE",
     "the tokenizer recorded in the shard (llm.c's files hold GPT-2 ids)", "tokenizer", false},
    {"vocab-size", FLAG_INT64, offsetof(Options, vocab_size), "50257", "V",
     "the vocabulary size recorded in the shard; every id must be below it", "tokenizer", false},
    {"eod-token", FLAG_INT64, offsetof(Options, eod_token), "50256", "E",
     "the end-of-text id: a new document starts at each one, and it is the shard's eod_token",
     "tokenizer", false},
};
#define NUM_FLAGS ((int)(sizeof FLAGS / sizeof FLAGS[0]))

#define ERR_SIZE 2048
#define HEADER_INTS 256
#define HEADER_BYTES (HEADER_INTS * 4)
#define LLMC_MAGIC 20240520
#define LLMC_VERSION 1
#define LLMC_LLAMA3_MAGIC 20240801
#define TOKEN_CHUNK 1048576

static void set_error(char *err, size_t err_size, const char *fmt, ...) GPT3D_PRINTF(3, 4);
static void set_error(char *err, size_t err_size, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(err, err_size, fmt, args);
    va_end(args);
}

static int32_t load_i32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24);
}

/* ------------------------------------------------------------ input */

typedef struct {
    const char *path;
    FILE *f;
    uint64_t num_tokens;
} TokenFile;

static bool open_token_file(TokenFile *t, const char *path, char *err, size_t err_size) {
    t->path = path;
    t->f = fopen(path, "rb");
    struct stat st;
    if (!t->f || fstat(fileno(t->f), &st) != 0) {
        set_error(err, err_size, "--input '%s': %s", path, strerror(errno));
        return false;
    }
    const uint64_t size = (uint64_t)st.st_size;
    unsigned char h[HEADER_BYTES];
    if (size < HEADER_BYTES || fread(h, 1, sizeof h, t->f) != sizeof h) {
        set_error(err, err_size,
                  "--input '%s' is truncated: %" PRIu64 " bytes, shorter than "
                  "llm.c's %d-byte header",
                  path, size, HEADER_BYTES);
        return false;
    }
    const int32_t magic = load_i32(h), version = load_i32(h + 4), count = load_i32(h + 8);
    if (magic == LLMC_LLAMA3_MAGIC) {
        set_error(err, err_size,
                  "--input '%s' is an llm.c LLaMA-3 token file (magic %d, uint32 "
                  "ids); only GPT-2 token files (magic %d) are supported",
                  path, magic, LLMC_MAGIC);
        return false;
    }
    if (magic != LLMC_MAGIC) {
        set_error(err, err_size, "--input '%s' is not an llm.c token file: magic %d, want %d", path,
                  magic, LLMC_MAGIC);
        return false;
    }
    if (version != LLMC_VERSION) {
        set_error(err, err_size,
                  "--input '%s': llm.c token file version %d is not supported "
                  "(want %d)",
                  path, version, LLMC_VERSION);
        return false;
    }
    if (count < 0) {
        set_error(err, err_size, "--input '%s': negative token count %d in the header", path,
                  count);
        return false;
    }
    const uint64_t expected = HEADER_BYTES + 2 * (uint64_t)count;
    if (size != expected) {
        set_error(err, err_size,
                  "--input '%s' %s: the header counts %d tokens (%" PRIu64
                  " bytes in all) but the file has %" PRIu64 " bytes",
                  path, size < expected ? "is truncated" : "has trailing bytes", count, expected,
                  size);
        return false;
    }
    t->num_tokens = (uint64_t)count;
    return true;
}

static void close_token_file(TokenFile *t) {
    if (t->f) fclose(t->f);
    t->f = NULL;
}

/* ------------------------------------------------------------ stream */

typedef struct {
    TokenShardWriter *w;
    int64_t vocab_size;
    int32_t eod;
    int32_t *doc; /* the document being assembled */
    size_t count, cap;
    bool started; /* some token was seen */
} DocumentSplitter;

static bool flush_document(DocumentSplitter *s, char *err, size_t err_size) {
    if (!s->started) return true;
    bool ok = token_shard_writer_add_document(s->w, s->doc, s->count, err, err_size);
    s->count = 0;
    return ok;
}

static void push_token(DocumentSplitter *s, int32_t id) {
    if (s->count == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 4096;
        s->doc = xrealloc(s->doc, s->cap * sizeof *s->doc);
    }
    s->doc[s->count++] = id;
    s->started = true;
}

static bool split_chunk(DocumentSplitter *s, const TokenFile *t, uint64_t first,
                        const unsigned char *raw, size_t n, char *err, size_t err_size) {
    for (size_t i = 0; i < n; i++) {
        const int32_t id = (int32_t)(raw[2 * i] | raw[2 * i + 1] << 8);
        if (id >= s->vocab_size) {
            set_error(err, err_size,
                      "--input '%s': token %" PRIu64 " is %d, outside the "
                      "vocabulary [0, %" PRId64 ") (check --vocab-size)",
                      t->path, first + i, id, s->vocab_size);
            return false;
        }
        /* A document begins at its end-of-text token. */
        if (id == s->eod && s->count > 0 && !flush_document(s, err, err_size)) return false;
        push_token(s, id);
    }
    return true;
}

static bool convert_file(DocumentSplitter *s, const char *path, unsigned char *chunk,
                         uint64_t *tokens, char *err, size_t err_size) {
    TokenFile t = {0};
    bool ok = open_token_file(&t, path, err, err_size);
    for (uint64_t done = 0; ok && done < t.num_tokens;) {
        size_t n = t.num_tokens - done < TOKEN_CHUNK ? (size_t)(t.num_tokens - done) : TOKEN_CHUNK;
        if (fread(chunk, 2, n, t.f) != n) {
            set_error(err, err_size, "--input '%s': read failed at token %" PRIu64 ": %s", path,
                      done, ferror(t.f) ? strerror(errno) : "unexpected end of file");
            ok = false;
            break;
        }
        ok = split_chunk(s, &t, done, chunk, n, err, err_size);
        done += n;
    }
    if (ok) *tokens = t.num_tokens;
    close_token_file(&t);
    return ok;
}

/* ------------------------------------------------------------- main */

static const char SUMMARY[] =
    "Converts llm.c token files (256-int32 header, magic 20240520, uint16 GPT-2 ids) into one "
    "gpt3d token shard, streaming; a document starts at each end-of-text token and keeps it as "
    "its first token, as llm.c writes it.";

int main(int argc, char **argv) {
    Options o;
    FlagParser parser;
    int status =
        flags_parse_main(&parser, FLAGS, NUM_FLAGS, &o, argc, argv, "convert_llmc_tokens", SUMMARY);
    if (status >= 0) return status;
    if (o.input.count == 0) gpt3d_fail_user("--input needs at least one llm.c token file");
    if (o.vocab_size < 1 || o.vocab_size > 65536)
        gpt3d_fail_user(
            "--vocab-size must be between 1 and 65536 for uint16 llm.c ids (got %" PRId64 ")",
            o.vocab_size);
    if (o.eod_token < 0 || o.eod_token >= o.vocab_size)
        gpt3d_fail_user("--eod-token %" PRId64 " is outside the vocabulary [0, %" PRId64 ")",
                        o.eod_token, o.vocab_size);
    char err[ERR_SIZE] = "";
    TokenShardWriter *w = token_shard_writer_create(o.output, o.tokenizer_type, o.vocab_size,
                                                    o.eod_token, err, sizeof err);
    if (!w) gpt3d_fail_user("--output: %s", err);
    DocumentSplitter s = {.w = w, .vocab_size = o.vocab_size, .eod = (int32_t)o.eod_token};
    unsigned char *chunk = xmalloc((size_t)TOKEN_CHUNK * 2);
    bool ok = true;
    uint64_t total = 0;
    for (int i = 0; ok && i < o.input.count; i++) {
        uint64_t tokens = 0;
        ok = convert_file(&s, o.input.items[i], chunk, &tokens, err, sizeof err);
        total += tokens;
    }
    ok = ok && flush_document(&s, err, sizeof err);
    if (ok && total == 0) {
        snprintf(err, sizeof err, "the --input files hold no tokens");
        ok = false;
    }
    const uint64_t documents = token_shard_writer_num_documents(w);
    if (!ok)
        token_shard_writer_abort(w);
    else
        ok = token_shard_writer_finish(w, err, sizeof err);
    free(chunk);
    free(s.doc);
    if (!ok) gpt3d_fail_user("%s (nothing was written to '%s')", err, o.output);
    printf("converted %d llm.c token file%s: %" PRIu64 " documents, %" PRIu64 " tokens -> %s\n",
           o.input.count, o.input.count == 1 ? "" : "s", documents, total, o.output);
    flags_free(&parser, &o);
    return 0;
}
