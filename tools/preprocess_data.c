/* tools/preprocess_data — tokenize a corpus into gpt3d token shards.
 *
 * Pipeline: the main thread reads the inputs in order and packs documents
 * into batches of about 256 KB of text (small enough that recycled buffers
 * stay resident, so few pages are faulted in; large enough to amortise the
 * hand-offs); --workers threads parse JSON, validate UTF-8 and tokenize whole
 * batches; one writer thread commits the batches strictly in input order, so
 * the shards are byte-identical for any --workers. At most 2*workers+2
 * batches are in flight, so memory does not grow with the corpus (a
 * plain-text input is one document and is held whole).
 *
 * Nothing appears under a final name unless the whole run succeeds: finished
 * shards wait as "<final>.part.<pid>" and are renamed at the very end; on an
 * error every part and temporary file is deleted. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/flags.h"
#include "core/timer.h"
#include "data/data.h"
#include "data/tokenizer_flags.h"

#define BATCH_TEXT_BYTES ((size_t)1 << 18)
#define BATCH_MAX_DOCS 4096
#define MESSAGE_SIZE 1024

typedef struct {
    StringList input;
    StringList json_keys;
    char *output_prefix;
    TokenizerOptions tok;
    bool append_eod, skip_bad_lines;
    int workers;
    int64_t shard_size_tokens;
} Options;

static const FlagSpec FLAGS[] = {
    {"input", FLAG_LIST, offsetof(Options, input), NULL, "PATH",
     "input files or directories: .jsonl/.json files hold one JSON object per line; any other "
     "file is plain text, one document per file; a directory means every file under it, in "
     "name order",
     "input", true},
    {"json-keys", FLAG_LIST, offsetof(Options, json_keys), "text", "KEY",
     "JSON keys to extract; one output per key", "input", false},
    {"skip-bad-lines", FLAG_SWITCH, offsetof(Options, skip_bad_lines), NULL, NULL,
     "report and skip malformed JSON lines, missing keys and invalid UTF-8 instead of stopping",
     "input", false},
    {"tokenizer-type", FLAG_STRING, offsetof(Options, tok.tokenizer_type), NULL, "TYPE",
     TOKENIZER_TYPES, "tokenizer", true},
    TOKENIZER_FILE_FLAGS(Options, tok, "tokenizer"),
    TOKENIZER_VOCAB_SIZE_FLAG(Options, tok, "tokenizer"),
    {"append-eod", FLAG_SWITCH, offsetof(Options, append_eod), NULL, NULL,
     "append the end-of-document token to every document", "tokenizer", false},
    {"output-prefix", FLAG_STRING, offsetof(Options, output_prefix), NULL, "PREFIX",
     "writes <PREFIX>_<key>_document.h5 (or _document_00000.h5, ... with --shard-size-tokens)",
     "output", true},
    {"shard-size-tokens", FLAG_INT64, offsetof(Options, shard_size_tokens), "0", "N",
     "start a new numbered shard before a document that would take a shard past N tokens; "
     "0 writes one file per key",
     "output", false},
    {"workers", FLAG_INT, offsetof(Options, workers), "1", "N", "tokenizer threads", "runtime",
     false},
};
#define NUM_FLAGS ((int)(sizeof FLAGS / sizeof FLAGS[0]))

/* Offset of the first byte that breaks UTF-8 (overlong forms, surrogates and
 * code points past U+10FFFF included), or -1 when all of s is valid. */
static long long utf8_invalid_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c == 0xE0)
            len = 3, lo = 0xA0;
        else if (c == 0xED)
            len = 3, hi = 0x9F;
        else if (c >= 0xE1 && c <= 0xEF)
            len = 3;
        else if (c == 0xF0)
            len = 4, lo = 0x90;
        else if (c == 0xF4)
            len = 4, hi = 0x8F;
        else if (c >= 0xF1 && c <= 0xF3)
            len = 4;
        else
            return (long long)i;
        if (i + len > n || s[i + 1] < lo || s[i + 1] > hi) return (long long)i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return (long long)i;
        i += len;
    }
    return -1;
}

/* ------------------------------------------------------------------ inputs */

typedef struct {
    char **paths;
    bool *is_jsonl;
    int count;
    long long total_bytes; /* -1 when some input is not a regular file */
} InputList;

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void input_add(InputList *in, const char *path) {
    in->paths = xrealloc(in->paths, (size_t)(in->count + 1) * sizeof *in->paths);
    in->is_jsonl = xrealloc(in->is_jsonl, (size_t)(in->count + 1) * sizeof *in->is_jsonl);
    in->paths[in->count] = xstrdup(path);
    in->is_jsonl[in->count] = has_suffix(path, ".jsonl") || has_suffix(path, ".json");
    in->count++;
    struct stat st;
    if (in->total_bytes >= 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode))
        in->total_bytes += (long long)st.st_size;
    else
        in->total_bytes = -1;
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds a directory's regular, non-hidden files, descending into
 * subdirectories (not through symbolic links, which could loop), each level
 * in name order so the document order is reproducible. Returns the count. */
static int input_add_directory(InputList *in, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) gpt3d_fail_user("--input %s: cannot list the directory: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        names = xrealloc(names, (size_t)(n + 1) * sizeof *names);
        names[n] = xmalloc(len);
        snprintf(names[n++], len, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, compare_strings);
    int added = 0;
    for (int i = 0; i < n; i++) {
        struct stat st, lst;
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
            input_add(in, names[i]);
            added++;
        } else if (lstat(names[i], &lst) == 0 && S_ISDIR(lst.st_mode)) {
            added += input_add_directory(in, names[i]);
        }
        free(names[i]);
    }
    free(names);
    return added;
}

static void input_list_free(InputList *in) {
    for (int i = 0; i < in->count; i++)
        free(in->paths[i]);
    free(in->paths);
    free(in->is_jsonl);
}

static InputList collect_inputs(const StringList *args) {
    InputList in = {NULL, NULL, 0, 0};
    for (int i = 0; i < args->count; i++) {
        struct stat st;
        if (stat(args->items[i], &st) != 0)
            gpt3d_fail_user("--input %s: %s", args->items[i], strerror(errno));
        if (!S_ISDIR(st.st_mode))
            input_add(&in, args->items[i]);
        else if (input_add_directory(&in, args->items[i]) == 0)
            gpt3d_fail_user("--input %s is a directory without files", args->items[i]);
    }
    return in;
}

typedef struct {
    size_t text_begin, text_len;
    int input;      /* index into InputList */
    long long line; /* 1-based; 1 for plain text */
    char *error;    /* set by the reader (fatal) or a worker (a bad line) */
    bool fatal;     /* not skippable: the input itself could not be read */
} Document;

typedef struct {
    char *text;
    size_t text_len, text_cap;
    Document *docs;
    int num_docs, docs_cap;
    long long input_bytes;
    /* Worker output: tokens of (doc, key) pairs, doc-major; pair p spans
     * [p ? token_end[p-1] : 0, token_end[p]). */
    int32_t *tokens;
    size_t num_tokens, tokens_cap;
    size_t *token_end;
    size_t token_end_cap;
} Batch;

static void batch_free(Batch *b) {
    if (!b) return;
    for (int i = 0; i < b->num_docs; i++)
        free(b->docs[i].error);
    free(b->text);
    free(b->docs);
    free(b->tokens);
    free(b->token_end);
    free(b);
}

/* Empties a batch for reuse, keeping its buffers: recycling batches spares
 * the page faults of fresh large allocations, which cost as much as the
 * byte tokenizer itself. */
static void batch_reset(Batch *b) {
    for (int i = 0; i < b->num_docs; i++)
        free(b->docs[i].error);
    b->text_len = 0;
    b->num_docs = 0;
    b->input_bytes = 0;
    b->num_tokens = 0;
}

/* Room for `len` more bytes of text and a NUL after the batch's text. */
static char *batch_reserve(Batch *b, size_t len) {
    size_t need = b->text_len + len + 1;
    if (need > b->text_cap) {
        b->text_cap = need > 2 * b->text_cap ? need : 2 * b->text_cap;
        b->text = xrealloc(b->text, b->text_cap);
    }
    return b->text + b->text_len;
}

/* Makes the `len` bytes just written at batch_reserve's pointer a document. */
static Document *batch_add_reserved(Batch *b, size_t len, int input, long long line) {
    b->text[b->text_len + len] = '\0'; /* cJSON and messages want C strings */
    if (b->num_docs == b->docs_cap) {
        b->docs_cap = b->docs_cap ? 2 * b->docs_cap : 64;
        b->docs = xrealloc(b->docs, (size_t)b->docs_cap * sizeof *b->docs);
    }
    Document *d = &b->docs[b->num_docs++];
    *d = (Document){b->text_len, len, input, line, NULL, false};
    b->text_len += len + 1;
    b->input_bytes += (long long)len;
    return d;
}

static Document *batch_add(Batch *b, const char *text, size_t len, int input, long long line) {
    memcpy(batch_reserve(b, len), text, len);
    return batch_add_reserved(b, len, input, line);
}

static bool batch_full(const Batch *b) {
    return b->text_len >= BATCH_TEXT_BYTES || b->num_docs >= BATCH_MAX_DOCS;
}

/* ------------------------------------------------------------------ pipeline */

typedef struct {
    const Options *opt;
    const InputList *inputs;
    const Tokenizer *tok;
    pthread_mutex_t lock;
    pthread_cond_t work_ready, batch_done, space_free;
    Batch **ring; /* batch seq lives in ring[seq % capacity] */
    bool *ring_done;
    long long capacity;
    long long next_read, next_process, next_commit;
    bool reading_finished;
    bool stop;     /* the writer failed: everyone winds down */
    Batch **spare; /* committed batches for the reader to refill */
    int num_spare;
} Pipeline;

static Batch *pipeline_take_batch(Pipeline *p) {
    pthread_mutex_lock(&p->lock);
    Batch *b = p->num_spare > 0 ? p->spare[--p->num_spare] : NULL;
    pthread_mutex_unlock(&p->lock);
    return b ? b : xcalloc(1, sizeof(Batch));
}

/* Called with the lock held. Batches grown by one huge plain-text document
 * are freed rather than kept. */
static void pipeline_recycle_batch(Pipeline *p, Batch *b) {
    if (p->num_spare == p->capacity + 1 || b->text_cap > 4 * BATCH_TEXT_BYTES ||
        b->tokens_cap > 4 * BATCH_TEXT_BYTES) {
        batch_free(b);
        return;
    }
    batch_reset(b);
    p->spare[p->num_spare++] = b;
}

static void set_doc_error(Document *d, const Pipeline *p, const char *fmt, ...) GPT3D_PRINTF(3, 4);
static void set_doc_error(Document *d, const Pipeline *p, const char *fmt, ...) {
    char what[MESSAGE_SIZE / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char msg[MESSAGE_SIZE];
    if (d->line > 0) /* line 0: the error is about the whole input */
        snprintf(msg, sizeof msg, "%s:%lld: %s", p->inputs->paths[d->input], d->line, what);
    d->error = xstrdup(d->line > 0 ? msg : what);
}

/* Hands a filled batch to the workers; blocks while too many are in flight.
 * Returns false when the run is stopping. */
static bool pipeline_submit(Pipeline *p, Batch *b) {
    pthread_mutex_lock(&p->lock);
    while (!p->stop && p->next_read - p->next_commit >= p->capacity)
        pthread_cond_wait(&p->space_free, &p->lock);
    bool stopping = p->stop;
    if (!stopping) {
        p->ring[p->next_read % p->capacity] = b;
        p->ring_done[p->next_read % p->capacity] = false;
        p->next_read++;
        pthread_cond_signal(&p->work_ready);
    }
    pthread_mutex_unlock(&p->lock);
    if (stopping) batch_free(b);
    return !stopping;
}

static bool read_jsonl(Pipeline *p, int input, FILE *f, Batch **b) {
    char *line = NULL;
    size_t cap = 0;
    long long number = 0;
    ssize_t len;
    bool ok = true;
    while (ok && (len = getline(&line, &cap, f)) >= 0) {
        number++;
        size_t n = (size_t)len;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        size_t blank = 0;
        while (blank < n && (line[blank] == ' ' || line[blank] == '\t'))
            blank++;
        (*b)->input_bytes += (long long)((size_t)len - n); /* progress counts every byte */
        if (blank == n) {                                  /* blank lines hold no document */
            (*b)->input_bytes += (long long)n;
            continue;
        }
        batch_add(*b, line, n, input, number);
        if (batch_full(*b)) {
            ok = pipeline_submit(p, *b);
            *b = pipeline_take_batch(p);
        }
    }
    free(line);
    return ok;
}

/* The whole file is one document, read straight into the batch (sized by
 * stat, so a large file is not copied through doubling buffers). */
static bool read_plain_text(int input, FILE *f, Batch *b) {
    struct stat st;
    size_t len = 0, room = fstat(fileno(f), &st) == 0 ? (size_t)st.st_size + 4096 : 4096;
    char *text = batch_reserve(b, room);
    for (size_t got; (got = fread(text + len, 1, room - len, f)) > 0;) {
        len += got;
        if (len == room) text = batch_reserve(b, room *= 2);
    }
    batch_add_reserved(b, len, input, 1);
    return true;
}

/* Reads every input in order into batches; runs on the main thread. */
static void read_inputs(Pipeline *p) {
    Batch *b = pipeline_take_batch(p);
    bool ok = true;
    for (int i = 0; ok && i < p->inputs->count; i++) {
        const char *path = p->inputs->paths[i];
        FILE *f = fopen(path, "rb");
        if (f) ok = p->inputs->is_jsonl[i] ? read_jsonl(p, i, f, &b) : read_plain_text(i, f, b);
        if (!f || (ok && ferror(f))) {
            int cause = errno;
            Document *d = batch_add(b, "", 0, i, 0);
            set_doc_error(d, p, "cannot read --input %s: %s", path, strerror(cause));
            d->fatal = true;
            ok = false;
        }
        if (f) fclose(f);
        if (ok && batch_full(b)) {
            ok = pipeline_submit(p, b);
            b = pipeline_take_batch(p);
        }
    }
    if (b->num_docs > 0)
        pipeline_submit(p, b);
    else
        batch_free(b);
    pthread_mutex_lock(&p->lock);
    p->reading_finished = true;
    pthread_cond_broadcast(&p->work_ready);
    pthread_cond_broadcast(&p->batch_done);
    pthread_mutex_unlock(&p->lock);
}

static void append_tokens(const Pipeline *p, Batch *b, const char *text, size_t len) {
    tokenizer_encode(p->tok, text, len, &b->tokens, &b->num_tokens, &b->tokens_cap);
    if (!p->opt->append_eod) return;
    if (b->num_tokens == b->tokens_cap)
        b->tokens = xrealloc(b->tokens, (b->tokens_cap = 2 * b->tokens_cap + 64) * sizeof(int32_t));
    b->tokens[b->num_tokens++] = tokenizer_eod(p->tok);
}

/* Plain text (key NULL) names the line of the bad byte. */
static bool check_utf8(const Pipeline *p, Document *d, const char *text, size_t len,
                       const char *key) {
    long long bad = utf8_invalid_at((const unsigned char *)text, len);
    for (long long i = 0; !key && i < bad; i++)
        d->line += text[i] == '\n';
    if (bad >= 0 && key)
        set_doc_error(d, p, "value of key '%s' is not valid UTF-8 (byte %lld)", key, bad);
    else if (bad >= 0)
        set_doc_error(d, p, "not valid UTF-8 (byte 0x%02x)", (unsigned char)text[bad]);
    return bad < 0;
}

/* Tokenizes one JSON line: every key, or none when any is bad (so the
 * outputs of all keys keep the same documents). */
static void tokenize_json(const Pipeline *p, Batch *b, Document *d, size_t pair) {
    const StringList *keys = &p->opt->json_keys;
    const char *line = b->text + d->text_begin;
    const char *end = NULL;
    /* The length includes the NUL so that trailing garbage is an error. */
    cJSON *obj = cJSON_ParseWithLengthOpts(line, d->text_len + 1, &end, true);
    if (!obj) {
        set_doc_error(d, p, "malformed JSON near column %zu",
                      end && end >= line ? (size_t)(end - line) + 1 : 1);
        return;
    }
    if (!cJSON_IsObject(obj)) set_doc_error(d, p, "expected a JSON object per line");
    for (int k = 0; !d->error && k < keys->count; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, keys->items[k]);
        const char *key = keys->items[k];
        if (!v)
            set_doc_error(d, p, "missing key '%s' (see --json-keys)", key);
        else if (!cJSON_IsString(v))
            set_doc_error(d, p, "key '%s' is not a string", key);
        else
            check_utf8(p, d, v->valuestring, strlen(v->valuestring), key);
    }
    for (int k = 0; !d->error && k < keys->count; k++) {
        const char *s = cJSON_GetObjectItemCaseSensitive(obj, keys->items[k])->valuestring;
        append_tokens(p, b, s, strlen(s));
        b->token_end[pair + (size_t)k] = b->num_tokens;
    }
    cJSON_Delete(obj);
}

static void tokenize_batch(const Pipeline *p, Batch *b) {
    size_t num_keys = (size_t)p->opt->json_keys.count;
    size_t pairs = (size_t)b->num_docs * num_keys;
    if (pairs > b->token_end_cap) {
        b->token_end = xrealloc(b->token_end, pairs * sizeof *b->token_end);
        b->token_end_cap = pairs;
    }
    for (int i = 0; i < b->num_docs; i++) {
        Document *d = &b->docs[i];
        size_t pair = (size_t)i * num_keys;
        if (!d->error && p->inputs->is_jsonl[d->input]) {
            tokenize_json(p, b, d, pair);
        } else if (!d->error) {
            const char *text = b->text + d->text_begin;
            if (check_utf8(p, d, text, d->text_len, NULL)) append_tokens(p, b, text, d->text_len);
        }
        if (d->error) /* empty spans keep token_end non-decreasing */
            for (size_t k = 0; k < num_keys; k++)
                b->token_end[pair + k] = b->num_tokens;
        else if (!p->inputs->is_jsonl[d->input])
            b->token_end[pair] = b->num_tokens;
    }
}

static void *worker_main(void *arg) {
    Pipeline *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && p->next_process == p->next_read && !p->reading_finished)
            pthread_cond_wait(&p->work_ready, &p->lock);
        if (p->stop || p->next_process == p->next_read) break;
        long long seq = p->next_process++;
        Batch *b = p->ring[seq % p->capacity];
        pthread_mutex_unlock(&p->lock);
        tokenize_batch(p, b);
        pthread_mutex_lock(&p->lock);
        p->ring_done[seq % p->capacity] = true;
        pthread_cond_broadcast(&p->batch_done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* ------------------------------------------------------------------ output */

typedef struct {
    char *final_path; /* waiting as part_path(final_path) until published */
    uint64_t documents, tokens;
} ShardRecord;

typedef struct {
    const char *key;
    TokenShardWriter *writer; /* the shard being filled (or NULL) and its final name */
    char *writer_final;
    ShardRecord *done; /* finished shards, waiting as .part files */
    int num_done;
} OutputStream;

typedef struct {
    Pipeline *pipe;
    OutputStream *streams;
    long long docs, skipped, bytes;
    uint64_t tokens;
    double start_s, last_report_s;
    char error[MESSAGE_SIZE];
    bool failed;
} Writer;

static char *shard_final_path(const Options *opt, const char *key, int index) {
    size_t n = strlen(opt->output_prefix) + strlen(key) + 64;
    char *path = xmalloc(n);
    if (opt->shard_size_tokens > 0)
        snprintf(path, n, "%s_%s_document_%05d.h5", opt->output_prefix, key, index);
    else
        snprintf(path, n, "%s_%s_document.h5", opt->output_prefix, key);
    return path;
}

static char *part_path(const char *final_path) {
    size_t n = strlen(final_path) + 32;
    char *part = xmalloc(n);
    snprintf(part, n, "%s.part.%ld", final_path, (long)getpid());
    return part;
}

static bool stream_open_shard(Writer *w, OutputStream *s) {
    s->writer_final = shard_final_path(w->pipe->opt, s->key, s->num_done);
    char *part = part_path(s->writer_final);
    const Tokenizer *t = w->pipe->tok;
    s->writer = token_shard_writer_create(part, tokenizer_type(t), tokenizer_vocab_size(t),
                                          tokenizer_eod(t), w->error, sizeof w->error);
    free(part);
    return s->writer != NULL;
}

static bool stream_close_shard(Writer *w, OutputStream *s) {
    ShardRecord r = {s->writer_final, token_shard_writer_num_documents(s->writer),
                     token_shard_writer_num_tokens(s->writer)};
    s->done = xrealloc(s->done, (size_t)(s->num_done + 1) * sizeof *s->done);
    s->done[s->num_done++] = r;
    s->writer_final = NULL;
    bool ok = token_shard_writer_finish(s->writer, w->error, sizeof w->error);
    s->writer = NULL;
    return ok;
}

static bool stream_add(Writer *w, OutputStream *s, const int32_t *tokens, size_t count) {
    int64_t limit = w->pipe->opt->shard_size_tokens;
    if (limit > 0 && s->writer && token_shard_writer_num_documents(s->writer) > 0 &&
        token_shard_writer_num_tokens(s->writer) + count > (uint64_t)limit &&
        !stream_close_shard(w, s))
        return false;
    if (!s->writer && !stream_open_shard(w, s)) return false;
    return token_shard_writer_add_document(s->writer, tokens, count, w->error, sizeof w->error);
}

static void report_progress(Writer *w, bool force) {
    double now = timer_now_s();
    if (!force && now - w->last_report_s < 1.0) return;
    w->last_report_s = now;
    double elapsed = now - w->start_s > 1e-9 ? now - w->start_s : 1e-9;
    double mb_s = (double)w->bytes / 1e6 / elapsed;
    char eta[96] = "";
    long long total = w->pipe->inputs->total_bytes;
    long long left = mb_s > 0 ? (long long)((double)(total - w->bytes) / 1e6 / mb_s) : 0;
    if (total > 0) /* known when every input is a regular file */
        snprintf(eta, sizeof eta, ", %.1f%%, ETA %lld:%02lld:%02lld",
                 100.0 * (double)w->bytes / (double)total, left / 3600, left / 60 % 60, left % 60);
    fprintf(stderr, "preprocess_data: %lld documents, %llu tokens, %.1f MB/s%s\n", w->docs,
            (unsigned long long)w->tokens, mb_s, eta);
}

/* Commits one processed batch in order. */
static bool commit_batch(Writer *w, Batch *b) {
    const Options *opt = w->pipe->opt;
    size_t num_keys = (size_t)opt->json_keys.count;
    for (int i = 0; i < b->num_docs; i++) {
        const Document *d = &b->docs[i];
        if (d->error) {
            if (d->fatal || !opt->skip_bad_lines) {
                snprintf(w->error, sizeof w->error, "%s%s", d->error,
                         d->fatal ? "" : " (pass --skip-bad-lines to skip such lines)");
                return false;
            }
            fprintf(stderr, "preprocess_data: skipping %s\n", d->error);
            w->skipped++;
            continue;
        }
        for (size_t k = 0; k < num_keys; k++) {
            size_t pair = (size_t)i * num_keys + k;
            size_t begin = pair ? b->token_end[pair - 1] : 0;
            size_t count = b->token_end[pair] - begin;
            if (!stream_add(w, &w->streams[k], b->tokens + begin, count)) return false;
            w->tokens += count;
        }
        w->docs++;
    }
    w->bytes += b->input_bytes;
    report_progress(w, false);
    return true;
}

static void *writer_main(void *arg) {
    Writer *w = arg;
    Pipeline *p = w->pipe;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        long long slot = p->next_commit % p->capacity;
        while (!(p->next_commit < p->next_read && p->ring_done[slot]) &&
               !(p->reading_finished && p->next_commit == p->next_read))
            pthread_cond_wait(&p->batch_done, &p->lock);
        if (p->next_commit == p->next_read) break;
        Batch *b = p->ring[slot];
        pthread_mutex_unlock(&p->lock);
        bool ok = commit_batch(w, b);
        pthread_mutex_lock(&p->lock);
        pipeline_recycle_batch(p, b);
        p->ring[slot] = NULL;
        p->next_commit++;
        pthread_cond_signal(&p->space_free);
        if (!ok) {
            w->failed = true;
            p->stop = true;
            pthread_cond_broadcast(&p->work_ready);
            pthread_cond_broadcast(&p->space_free);
            break;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Closes the open shards, renames every part to its final name. */
static bool publish_outputs(Writer *w) {
    int num_keys = w->pipe->opt->json_keys.count;
    for (int k = 0; k < num_keys; k++) {
        OutputStream *s = &w->streams[k];
        if (!s->writer && s->num_done == 0 && !stream_open_shard(w, s)) return false;
        if (s->writer && !stream_close_shard(w, s)) return false;
    }
    for (int k = 0; k < num_keys; k++) {
        for (int i = 0; i < w->streams[k].num_done; i++) {
            const char *final_path = w->streams[k].done[i].final_path;
            char *part = part_path(final_path);
            bool renamed = rename(part, final_path) == 0;
            if (!renamed)
                snprintf(w->error, sizeof w->error, "cannot rename %s to %s: %s", part, final_path,
                         strerror(errno));
            free(part);
            if (!renamed) return false;
        }
    }
    return true;
}

static void discard_outputs(Writer *w) {
    for (int k = 0; k < w->pipe->opt->json_keys.count; k++) {
        OutputStream *s = &w->streams[k];
        if (s->writer) token_shard_writer_abort(s->writer);
        for (int i = 0; i < s->num_done; i++) {
            char *part = part_path(s->done[i].final_path);
            unlink(part);
            free(part);
        }
    }
}

static void print_summary(const Writer *w) {
    const Options *opt = w->pipe->opt;
    double elapsed = timer_now_s() - w->start_s;
    printf("preprocess_data: %lld documents, %llu tokens from %lld bytes in %.1f s (%.1f MB/s)\n",
           w->docs, (unsigned long long)w->tokens, w->bytes, elapsed,
           elapsed > 0 ? (double)w->bytes / 1e6 / elapsed : 0.0);
    if (w->skipped) printf("preprocess_data: skipped %lld bad lines\n", w->skipped);
    printf("files written:\n");
    for (int k = 0; k < opt->json_keys.count; k++) {
        const OutputStream *s = &w->streams[k];
        for (int i = 0; i < s->num_done; i++)
            printf("  %s: %llu documents, %llu tokens\n", s->done[i].final_path,
                   (unsigned long long)s->done[i].documents, (unsigned long long)s->done[i].tokens);
        /* An earlier run with more shards would leave files a glob still matches. */
        char *next = shard_final_path(opt, s->key, s->num_done);
        if (opt->shard_size_tokens > 0 && access(next, F_OK) == 0)
            fprintf(stderr,
                    "preprocess_data: warning: %s is left over from an earlier run; "
                    "delete it or a --data-path glob will include it\n",
                    next);
        free(next);
    }
}

static void free_writer(Writer *w) {
    for (int k = 0; k < w->pipe->opt->json_keys.count; k++) {
        OutputStream *s = &w->streams[k];
        for (int i = 0; i < s->num_done; i++)
            free(s->done[i].final_path);
        free(s->done);
        free(s->writer_final);
    }
    free(w->streams);
}

static int run(const Options *opt, const InputList *inputs, const Tokenizer *tok) {
    Pipeline p = {.opt = opt, .inputs = inputs, .tok = tok};
    pthread_cond_t *conds[] = {&p.work_ready, &p.batch_done, &p.space_free};
    pthread_mutex_init(&p.lock, NULL);
    for (int i = 0; i < 3; i++)
        pthread_cond_init(conds[i], NULL);
    p.capacity = 2LL * opt->workers + 2;
    p.ring = xcalloc((size_t)p.capacity, sizeof *p.ring);
    p.ring_done = xcalloc((size_t)p.capacity, sizeof *p.ring_done);
    p.spare = xcalloc((size_t)p.capacity + 1, sizeof *p.spare);
    Writer w = {.pipe = &p, .start_s = timer_now_s()};
    w.last_report_s = w.start_s;
    w.streams = xcalloc((size_t)opt->json_keys.count, sizeof *w.streams);
    for (int k = 0; k < opt->json_keys.count; k++)
        w.streams[k].key = opt->json_keys.items[k];

    pthread_t writer, *workers = xcalloc((size_t)opt->workers, sizeof *workers);
    GPT3D_CHECK(pthread_create(&writer, NULL, writer_main, &w) == 0, "pthread_create failed");
    for (int i = 0; i < opt->workers; i++)
        GPT3D_CHECK(pthread_create(&workers[i], NULL, worker_main, &p) == 0,
                    "pthread_create failed");
    read_inputs(&p);
    for (int i = 0; i < opt->workers; i++)
        pthread_join(workers[i], NULL);
    pthread_join(writer, NULL);
    for (long long i = 0; i < p.capacity; i++)
        batch_free(p.ring[i]);
    for (int i = 0; i < p.num_spare; i++)
        batch_free(p.spare[i]);

    bool ok = !w.failed && publish_outputs(&w);
    if (ok) {
        report_progress(&w, true);
        print_summary(&w);
    } else {
        discard_outputs(&w);
        fprintf(stderr, "error: %s\npreprocess_data: stopped; no output files were written\n",
                w.error);
    }
    free_writer(&w);
    free(workers);
    free(p.ring);
    free(p.ring_done);
    free(p.spare);
    pthread_mutex_destroy(&p.lock);
    for (int i = 0; i < 3; i++)
        pthread_cond_destroy(conds[i]);
    return ok ? 0 : 1;
}

static void validate_options(const Options *opt, const InputList *inputs) {
    if (opt->workers < 1 || opt->workers > 1024)
        gpt3d_fail_user("--workers must be between 1 and 1024, got %d", opt->workers);
    if (opt->shard_size_tokens < 0)
        gpt3d_fail_user("--shard-size-tokens must be >= 0 (0 = one file per key), got %lld",
                        (long long)opt->shard_size_tokens);
    if (!opt->output_prefix[0]) gpt3d_fail_user("--output-prefix is empty");
    for (int k = 0; k < opt->json_keys.count; k++) {
        for (int j = 0; j < k; j++)
            if (!strcmp(opt->json_keys.items[j], opt->json_keys.items[k]))
                gpt3d_fail_user("--json-keys names '%s' twice", opt->json_keys.items[k]);
    }
    for (int i = 0; i < inputs->count; i++)
        if (!inputs->is_jsonl[i] && opt->json_keys.count > 1)
            gpt3d_fail_user("--input %s is plain text (not .jsonl/.json), which has no keys; "
                            "with several --json-keys give only JSONL inputs",
                            inputs->paths[i]);
}

int main(int argc, char **argv) {
    Options opt;
    FlagParser parser;
    bool wants_help = false;
    if (!flags_parse(&parser, FLAGS, NUM_FLAGS, &opt, argc, argv, &wants_help)) {
        fprintf(stderr, "error: %s\n", parser.error);
        flags_free(&parser, &opt);
        return 2;
    }
    if (wants_help) {
        flags_print_help(FLAGS, NUM_FLAGS, "preprocess_data",
                         "Tokenizes JSONL or plain-text corpora into gpt3d HDF5 token shards "
                         "(one per --json-keys key), ready for pretrain_gpt --data-path.",
                         stdout);
        flags_free(&parser, &opt);
        return 0;
    }
    InputList inputs = collect_inputs(&opt.input);
    validate_options(&opt, &inputs);
    char err[MESSAGE_SIZE];
    Tokenizer *tok = tokenizer_open(&opt.tok, err, sizeof err);
    if (!tok) gpt3d_fail_user("%s", err);
    int rc = run(&opt, &inputs, tok);
    tokenizer_free(tok);
    input_list_free(&inputs);
    flags_free(&parser, &opt);
    return rc;
}
