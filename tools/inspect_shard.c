/* tools/inspect_shard — what is in a gpt3d token shard.
 *
 * Prints the shard's root attributes as HDF5 stores them (so a shard written
 * by another tool, h5py included, shows what it really holds, even when it
 * fails validation), the /tokens dtype and layout, the document and token
 * counts and document-length statistics, then one document's ids and its
 * text decoded with the tokenizer the shard names (or --tokenizer-type).
 * Exit status: 0 shown, 1 the shard is not valid, 2 bad usage. */
#include <hdf5.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/errors.h"
#include "core/flags.h"
#include "data/data.h"
#include "data/tokenizer_flags.h"

typedef struct {
    char *input;
    TokenizerOptions tok;
    int64_t document, max_tokens;
} Options;

static const FlagSpec FLAGS[] = {
    {"input", FLAG_STRING, offsetof(Options, input), NULL, "FILE",
     "the shard to inspect (may also be given as the first word, before any flag)", "input", false},
    {"document", FLAG_INT64, offsetof(Options, document), "0", "N",
     "the document to show (0-based)", "output", false},
    {"max-tokens", FLAG_INT64, offsetof(Options, max_tokens), "512", "K",
     "show at most the first K tokens of the document; 0 shows all", "output", false},
    {"tokenizer-type", FLAG_STRING, offsetof(Options, tok.tokenizer_type), NULL, "TYPE",
     "decode with TYPE instead of the shard's tokenizer_type attribute", "tokenizer", false},
    TOKENIZER_FILE_FLAGS(Options, tok, "tokenizer"),
    TOKENIZER_VOCAB_SIZE_FLAG(Options, tok, "tokenizer"),
};
#define NUM_FLAGS ((int)(sizeof FLAGS / sizeof FLAGS[0]))

/* ------------------------------------------------------------- raw HDF5 */

static void print_string_attr(hid_t attr, hid_t type) {
    hid_t mem = H5Tcopy(H5T_C_S1);
    H5Tset_cset(mem, H5Tget_cset(type)); /* HDF5 converts no ASCII <-> UTF-8 */
    char *value = NULL;
    herr_t rc;
    if (H5Tis_variable_str(type) > 0) {
        H5Tset_size(mem, H5T_VARIABLE);
        char *vl = NULL;
        rc = H5Aread(attr, mem, &vl);
        if (rc >= 0) value = xstrdup(vl ? vl : "");
        if (rc >= 0 && vl) H5free_memory(vl);
    } else {
        size_t n = H5Tget_size(type);
        H5Tset_size(mem, n + 1); /* room for the terminator whatever the padding */
        value = xcalloc(n + 2, 1);
        rc = H5Aread(attr, mem, value);
    }
    if (rc >= 0)
        printf("\"%s\"", value);
    else
        printf("(unreadable string)");
    free(value);
    H5Tclose(mem);
}

static herr_t print_attribute(hid_t loc, const char *name, const H5A_info_t *info, void *unused) {
    (void)info;
    (void)unused;
    hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t type = H5Aget_type(attr), space = H5Aget_space(attr);
    hssize_t points = H5Sget_simple_extent_npoints(space);
    printf("  %s = ", name);
    H5T_class_t klass = H5Tget_class(type);
    if (points != 1) {
        printf("(%lld values)", (long long)points);
    } else if (klass == H5T_STRING) {
        print_string_attr(attr, type);
    } else if (klass == H5T_INTEGER) {
        long long v = 0;
        if (H5Aread(attr, H5T_NATIVE_LLONG, &v) >= 0) printf("%lld", v);
        printf(" (%s%zu-bit integer)", H5Tget_sign(type) == H5T_SGN_NONE ? "unsigned " : "",
               8 * H5Tget_size(type));
    } else if (klass == H5T_FLOAT) {
        double v = 0;
        if (H5Aread(attr, H5T_NATIVE_DOUBLE, &v) >= 0) printf("%g", v);
    } else {
        printf("(HDF5 type class %d)", (int)klass);
    }
    printf("\n");
    H5Sclose(space);
    H5Tclose(type);
    H5Aclose(attr);
    return 0;
}

static void print_tokens_layout(hid_t file) {
    if (H5Lexists(file, "/tokens", H5P_DEFAULT) <= 0) {
        printf("/tokens: missing\n");
        return;
    }
    hid_t dset = H5Dopen2(file, "/tokens", H5P_DEFAULT);
    hid_t type = H5Dget_type(dset), plist = H5Dget_create_plist(dset);
    if (H5Tget_class(type) == H5T_INTEGER)
        printf("token dtype: %s%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int",
               8 * H5Tget_size(type));
    else
        printf("token dtype: not an integer (HDF5 type class %d)", (int)H5Tget_class(type));
    hsize_t chunk = 0;
    if (H5Pget_layout(plist) == H5D_CHUNKED && H5Pget_chunk(plist, 1, &chunk) == 1)
        printf(", chunks of %llu tokens", (unsigned long long)chunk);
    else
        printf(", not chunked");
    int filters = H5Pget_nfilters(plist);
    printf(", %s, %llu bytes stored\n", filters > 0 ? "compressed/filtered" : "uncompressed",
           (unsigned long long)H5Dget_storage_size(dset));
    H5Pclose(plist);
    H5Tclose(type);
    H5Dclose(dset);
}

/* False when HDF5 cannot open the file at all. */
static bool print_raw_view(const char *path) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
    H5Pset_file_locking(fapl, false, true); /* as the reader: read-only files need no lock */
#endif
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (file < 0) return false;
    struct stat st;
    printf("file: %s (%lld bytes)\n", path, stat(path, &st) == 0 ? (long long)st.st_size : -1LL);
    printf("attributes:\n");
    hsize_t idx = 0;
    H5Aiterate2(file, H5_INDEX_NAME, H5_ITER_INC, &idx, print_attribute, NULL);
    print_tokens_layout(file);
    H5Fclose(file);
    return true;
}

/* -------------------------------------------------------------- summary */

static void print_document_stats(const TokenShard *s) {
    int64_t docs = token_shard_num_documents(s);
    const uint64_t *off = token_shard_document_offsets(s);
    printf("documents: %lld\n", (long long)docs);
    printf("tokens: %lld\n", (long long)token_shard_num_tokens(s));
    if (docs == 0) return;
    uint64_t lo = UINT64_MAX, hi = 0;
    int64_t empty = 0;
    for (int64_t d = 0; d < docs; d++) {
        uint64_t len = off[d + 1] - off[d];
        if (len < lo) lo = len;
        if (len > hi) hi = len;
        empty += len == 0;
    }
    printf("document length: min %llu, mean %.2f, max %llu tokens (%lld empty)\n",
           (unsigned long long)lo, (double)token_shard_num_tokens(s) / (double)docs,
           (unsigned long long)hi, (long long)empty);
}

static void print_ids(const int32_t *ids, size_t n) {
    printf("ids:");
    int col = 4;
    for (size_t i = 0; i < n; i++) {
        char word[16];
        int len = snprintf(word, sizeof word, " %d", ids[i]);
        if (col + len > 100) {
            printf("\n    ");
            col = 4;
        }
        printf("%s", word);
        col += len;
    }
    printf("\n");
}

/* Text as decoded, with control characters other than newline and tab shown
 * as \xNN so they cannot upset the terminal. */
static void print_text(const char *text) {
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p < 0x20 && *p != '\n' && *p != '\t')
            printf("\\x%02x", *p);
        else if (*p == 0x7f)
            printf("\\x7f");
        else
            putchar(*p);
    }
}

/* NULL with a printed reason when this run cannot decode; exits 2 on a
 * tokenizer the user named but that cannot be loaded. */
static Tokenizer *decoder_for(const Options *o, const TokenShard *s) {
    const char *named = o->tok.tokenizer_type;
    const char *type = named ? named : token_shard_tokenizer_type(s);
    if (named && strcmp(named, token_shard_tokenizer_type(s)) != 0)
        printf("note: decoding with --tokenizer-type %s, the shard says '%s'\n", type,
               token_shard_tokenizer_type(s));
    if (!tokenizer_type_known(type)) {
        printf("text: not decoded (no tokenizer named '%s'; pass --tokenizer-type)\n", type);
        return NULL;
    }
    TokenizerOptions tok = o->tok;
    tok.tokenizer_type = (char *)type;
    if (!strcmp(type, "GPT2BPETokenizer") && (!tok.vocab_file || !tok.merge_file)) {
        printf("text: not decoded (GPT2BPETokenizer needs --vocab-file and --merge-file; "
               "tools/fetch_gpt2_vocab.sh fetches them)\n");
        return NULL;
    }
    if ((!strcmp(type, "HuggingFaceTokenizer") || !strcmp(type, "TikTokenizer")) &&
        !tok.tokenizer_model) {
        printf("text: not decoded (%s needs --tokenizer-model)\n", type);
        return NULL;
    }
    if (!strcmp(type, "NullTokenizer") && tok.vocab_size == 0)
        tok.vocab_size = token_shard_vocab_size(s); /* ids need no files */
    char err[1024];
    Tokenizer *t = tokenizer_open(&tok, err, sizeof err);
    if (!t) gpt3d_fail_user("%s", err);
    if (tokenizer_vocab_size(t) != token_shard_vocab_size(s))
        printf("note: tokenizer %s has vocab_size %lld, the shard says %lld\n", type,
               (long long)tokenizer_vocab_size(t), (long long)token_shard_vocab_size(s));
    return t;
}

static int show_document(const Options *o, TokenShard *s) {
    int64_t docs = token_shard_num_documents(s);
    if (docs == 0) {
        printf("no documents to show\n");
        return 0;
    }
    if (o->document < 0 || o->document >= docs)
        gpt3d_fail_user("--document %lld: the shard has %lld documents, numbered 0 to %lld",
                        (long long)o->document, (long long)docs, (long long)docs - 1);
    const uint64_t *off = token_shard_document_offsets(s);
    uint64_t begin = off[o->document], length = off[o->document + 1] - begin;
    uint64_t shown =
        o->max_tokens > 0 && (uint64_t)o->max_tokens < length ? (uint64_t)o->max_tokens : length;
    printf("document %lld: %llu tokens at [%llu, %llu) of /tokens, showing %llu\n",
           (long long)o->document, (unsigned long long)length, (unsigned long long)begin,
           (unsigned long long)(begin + length), (unsigned long long)shown);
    int32_t *ids = xmalloc((shown ? shown : 1) * sizeof *ids);
    char err[1024];
    if (!token_shard_read(s, begin, shown, ids, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        free(ids);
        return 1;
    }
    print_ids(ids, shown);
    Tokenizer *t = decoder_for(o, s);
    if (t) {
        char *text = tokenizer_decode(t, ids, shown);
        printf("text (%s):\n", tokenizer_type(t));
        print_text(text);
        printf("\n--- end of text%s ---\n", shown < length ? " (truncated by --max-tokens)" : "");
        free(text);
        tokenizer_free(t);
    }
    free(ids);
    return 0;
}

/* --------------------------------------------------------------- main */

static const char SUMMARY[] =
    "Prints a gpt3d token shard's attributes, /tokens dtype and layout, document and token "
    "counts and document lengths, and decodes one document with the shard's tokenizer.";

static int inspect(const Options *o) {
    bool opened = print_raw_view(o->input);
    char err[1024];
    TokenShard *s = token_shard_open(o->input, err, sizeof err);
    if (!s) {
        fprintf(stderr, "error: %s\n", err);
        return opened ? 1 : 2;
    }
    print_document_stats(s);
    int rc = show_document(o, s);
    token_shard_close(s);
    return rc;
}

int main(int argc, char **argv) {
    /* The shard may come first as a bare word; the flag parser sees the rest. */
    const char *positional = argc > 1 && argv[1][0] != '-' ? argv[1] : NULL;
    if (positional) {
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    Options o;
    FlagParser parser;
    int status = flags_parse_main(&parser, FLAGS, NUM_FLAGS, &o, argc, argv,
                                  "inspect_shard FILE.h5", SUMMARY);
    if (status >= 0) return status;
    if (positional && o.input) {
        flags_free(&parser, &o);
        gpt3d_fail_user("give the shard once: either first or with --input, not both");
    }
    if (positional) o.input = xstrdup(positional);
    if (!o.input) {
        flags_free(&parser, &o);
        gpt3d_fail_user("no shard given; usage: inspect_shard FILE.h5 [--document N] (see --help)");
    }
    if (o.max_tokens < 0) gpt3d_fail_user("--max-tokens must be >= 0 (0 shows all)");
    int rc = inspect(&o);
    flags_free(&parser, &o);
    return rc;
}
