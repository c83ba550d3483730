/* tools/generate — sample text from a trained gpt3d checkpoint.
 *
 * Loads a checkpoint saved at any layout into a one-rank model (TP = PP =
 * DP = 1, micro-batch 1) by reading every parameter's whole canonical tensor,
 * encodes --prompt, and samples --max-new-tokens tokens one at a time: each
 * step runs the full forward pass over the context (left-truncated to the
 * model's sequence length; there is no KV cache, so a step costs one forward
 * of the window) and draws the next token from the last position's logits
 * with --temperature and --top-k. The draw of step i uses the counter-based
 * RNG keyed by (--seed, i), so a seed always gives the same text; padded
 * vocabulary entries are never drawn (sample j of --num-samples uses the
 * keys (--seed, j, i)); --greedy (or --temperature 0) takes the
 * argmax, lowest id on ties. Sampling stops at the end-of-document token
 * unless --ignore-eod.
 *
 * stdout gets, per sample, the prompt followed by the continuation and a
 * newline, streamed as tokens are drawn; everything else goes to stderr.
 * Exit status: 0 generated, 2 bad usage or a checkpoint that cannot be used. */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "checkpoint/checkpoint.h"
#include "core/errors.h"
#include "core/flags.h"
#include "core/rng.h"
#include "data/data.h"
#include "data/tokenizer_flags.h"
#include "model/gpt_model.h"

typedef struct {
    char *load;
    int64_t iteration;
    char *prompt;
    int max_new_tokens;
    double temperature;
    int top_k;
    int64_t seed;
    bool greedy, ignore_eod, print_ids;
    int seq_length, num_samples;
    TokenizerOptions tok;
    char *device;
} Options;

static const FlagSpec FLAGS[] = {
    {"load", FLAG_STRING, offsetof(Options, load), NULL, "DIR",
     "the --save directory of a training run", "checkpoint", true},
    {"iteration", FLAG_INT64, offsetof(Options, iteration), NULL, "N",
     "use the checkpoint of iteration N (default: the latest)", "checkpoint", false},
    {"prompt", FLAG_STRING, offsetof(Options, prompt), "", "TEXT",
     "the text to continue; empty starts from the end-of-document token", "sampling", false},
    {"max-new-tokens", FLAG_INT, offsetof(Options, max_new_tokens), "64", "N",
     "tokens to generate at most", "sampling", false},
    {"temperature", FLAG_DOUBLE, offsetof(Options, temperature), "1.0", "T",
     "divide the logits by T before the softmax; 0 means greedy", "sampling", false},
    {"top-k", FLAG_INT, offsetof(Options, top_k), "0", "K",
     "sample among the K most likely tokens only; 0 means all", "sampling", false},
    {"seed", FLAG_INT64, offsetof(Options, seed), "1234", "S",
     "random seed: the same seed, checkpoint and flags give the same text", "sampling", false},
    {"greedy", FLAG_SWITCH, offsetof(Options, greedy), NULL, NULL,
     "always take the most likely token (same as --temperature 0)", "sampling", false},
    {"ignore-eod", FLAG_SWITCH, offsetof(Options, ignore_eod), NULL, NULL,
     "keep sampling after the end-of-document token instead of stopping", "sampling", false},
    {"num-samples", FLAG_INT, offsetof(Options, num_samples), "1", "N",
     "generate N independent continuations of the prompt, one after another", "sampling", false},
    {"print-ids", FLAG_SWITCH, offsetof(Options, print_ids), NULL, NULL,
     "also print the prompt and generated token ids on stderr", "output", false},
    {"seq-length", FLAG_INT, offsetof(Options, seq_length), "0", "T",
     "context window in tokens (default: the checkpoint's --seq-length; at most its "
     "--max-position-embeddings)",
     "model", false},
    {"tokenizer-type", FLAG_STRING, offsetof(Options, tok.tokenizer_type), NULL, "TYPE",
     TOKENIZER_TYPES " (default: the one the checkpoint records)", "tokenizer", false},
    TOKENIZER_FILE_FLAGS(Options, tok, "tokenizer"),
    TOKENIZER_VOCAB_SIZE_FLAG(Options, tok, "tokenizer"),
    {"device", FLAG_STRING, offsetof(Options, device), "cpu", "DEV",
     "cpu or cuda (a build with the CUDA backend)", "model", false},
};
#define NUM_FLAGS ((int)(sizeof FLAGS / sizeof FLAGS[0]))

#define ERR_SIZE 2048
#define LOAD_CHUNK_ELEMENTS ((int64_t)1 << 22) /* 16 MB of fp32 at a time */
#define MAX_NEW_TOKENS 1000000 /* < 2^32: a draw's RNG index is (sample << 32) | step */
#define MAX_SAMPLES 1000000

/* ------------------------------------------------------- checkpoint */

static TransformerConfig config_of(const CheckpointMeta *m, int seq_length) {
    TransformerConfig cfg = m->model; /* every weight comes from the checkpoint */
    cfg.seq_length = seq_length;
    return cfg;
}

static bool same_shape(const ParamInfo *p, int ndim, const int64_t *shape) {
    if (ndim != p->ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (shape[d] != p->shape[d]) return false;
    return true;
}

/* Reads every parameter's canonical weights into the model's parameter
 * buffer, through a host chunk and a device fp32 staging buffer (the
 * parameters are act-dtype: fp32 on the CPU, bf16 on CUDA). */
static void load_weights(GPTModel *m, Backend *be, CheckpointReader *r, const char *dir) {
    const ParamTable *t = gpt_model_params(m);
    float *host = xmalloc((size_t)LOAD_CHUNK_ELEMENTS * sizeof *host);
    float *staging = be->ops->alloc(be, (size_t)LOAD_CHUNK_ELEMENTS * sizeof(float));
    unsigned char *params = gpt_model_param_buffer(m);
    char err[ERR_SIZE];
    for (int i = 0; i < t->count; i++) {
        const ParamInfo *p = &t->params[i];
        int ndim;
        int64_t shape[CHECKPOINT_MAX_DIMS];
        if (!checkpoint_param_shape(r, p->name, &ndim, shape))
            gpt3d_fail_user("checkpoint '%s' lacks parameter '%s' that its model shape implies "
                            "(checkpoint_info --verify tells what is wrong)",
                            dir, p->name);
        if (!same_shape(p, ndim, shape))
            gpt3d_fail_user("checkpoint '%s': parameter '%s' has another shape than its "
                            "metadata.json implies (checkpoint_info --verify)",
                            dir, p->name);
        for (int64_t begin = 0; begin < p->local_numel; begin += LOAD_CHUNK_ELEMENTS) {
            int64_t n = p->local_numel - begin < LOAD_CHUNK_ELEMENTS ? p->local_numel - begin
                                                                     : LOAD_CHUNK_ELEMENTS;
            int64_t canonical = p->local_begin + begin;
            if (!checkpoint_read(r, p->name, CKPT_WEIGHT, canonical, canonical + n, host, err,
                                 sizeof err))
                gpt3d_fail_user("%s", err);
            be->ops->copy_to_device(be, staging, host, (size_t)n * sizeof(float));
            void *dst = params + backend_act_bytes(be, p->offset + (size_t)begin);
            be->ops->f32_to_act(be, dst, staging, (size_t)n);
        }
    }
    be->ops->synchronize(be);
    be->ops->free(be, staging);
    free(host);
}

/* ------------------------------------------------------- sampling */

typedef struct {
    double temperature; /* 0: greedy */
    int top_k;          /* 0: all */
    uint64_t seed;
    uint64_t stream;
} Sampler;

typedef struct {
    float logit;
    int32_t id;
} Candidate;

/* Most likely first; equal logits by id, so the order is a total one and
 * the draw does not depend on the sort algorithm. */
static int by_logit_desc(const void *a, const void *b) {
    const Candidate *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int32_t argmax(const float *logits, int64_t vocab) {
    int32_t best = 0;
    for (int64_t i = 1; i < vocab; i++)
        if (logits[i] > logits[best]) best = (int32_t)i;
    return best;
}

/* Draws from softmax(logit / T) over the candidates, in their order, with
 * the uniform number of (seed, draw index). */
static int32_t draw(const Sampler *s, const Candidate *c, int64_t n, uint64_t index) {
    float max = c[0].logit;
    for (int64_t i = 1; i < n; i++)
        if (c[i].logit > max) max = c[i].logit;
    double total = 0.0;
    for (int64_t i = 0; i < n; i++)
        total += exp(((double)c[i].logit - max) / s->temperature);
    const double target = rng_uniform(s->seed, s->stream, index) * total;
    double cumulative = 0.0;
    for (int64_t i = 0; i < n; i++) {
        cumulative += exp(((double)c[i].logit - max) / s->temperature);
        if (cumulative > target) return c[i].id;
    }
    return c[n - 1].id; /* target within rounding of the total */
}

/* The next token from the logits of the real vocabulary [0, vocab). */
static int32_t next_token(const Sampler *s, const float *logits, int64_t vocab, uint64_t sample,
                          uint64_t step, Candidate *scratch) {
    for (int64_t i = 0; i < vocab; i++)
        if (!isfinite(logits[i]))
            gpt3d_fail_user("the model's logit of token %" PRId64 " is %f at step %" PRIu64
                            ": the checkpoint holds non-finite weights",
                            i, (double)logits[i], step);
    if (s->temperature == 0.0 || s->top_k == 1) return argmax(logits, vocab);
    for (int64_t i = 0; i < vocab; i++)
        scratch[i] = (Candidate){logits[i], (int32_t)i};
    int64_t n = vocab;
    if (s->top_k > 0 && s->top_k < vocab) {
        qsort(scratch, (size_t)vocab, sizeof *scratch, by_logit_desc);
        n = s->top_k;
    }
    return draw(s, scratch, n, sample << 32 | step);
}

/* ------------------------------------------------------- generation */

typedef struct {
    int32_t *ids;
    size_t count, cap;
} TokenList;

static void token_list_push(TokenList *l, int32_t id) {
    if (l->count == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->ids = xrealloc(l->ids, l->cap * sizeof *l->ids);
    }
    l->ids[l->count++] = id;
}

typedef struct {
    GPTModel *model;
    int T;         /* the model's window */
    int64_t vocab; /* real vocabulary; the padded rest is never drawn */
    int32_t eod;
    int32_t *window, *targets;
    Candidate *scratch;
} Generator;

/* Logits of the position after the last context token. The window holds
 * the context's last T tokens; positions after it are padding, which the
 * causal mask keeps out of every earlier position. */
static const float *last_logits(Generator *g, const TokenList *context) {
    size_t n = context->count < (size_t)g->T ? context->count : (size_t)g->T;
    const int32_t *src = context->ids + (context->count - n);
    for (size_t i = 0; i < (size_t)g->T; i++)
        g->window[i] = i < n ? src[i] : g->eod;
    gpt_model_forward(g->model, g->window, g->targets);
    int v_local = 0;
    const float *logits = gpt_model_last_logits(g->model, &v_local);
    return logits + (n - 1) * (size_t)v_local;
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "%s:", label);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* Sample `sample`: the prompt's tokens are context[0, prompt_tokens). */
static void generate(Generator *g, const Sampler *s, const Tokenizer *tok, const Options *o,
                     uint64_t sample, TokenList *context, size_t prompt_tokens) {
    context->count = prompt_tokens;
    fputs(o->prompt, stdout);
    fflush(stdout);
    for (int step = 0; step < o->max_new_tokens; step++) {
        const float *logits = last_logits(g, context);
        int32_t id = next_token(s, logits, g->vocab, sample, (uint64_t)step, g->scratch);
        if (id == g->eod && !o->ignore_eod) break;
        token_list_push(context, id);
        char *text = tokenizer_decode(tok, &id, 1);
        fputs(text, stdout);
        fflush(stdout);
        free(text);
    }
    fputs("\n", stdout);
    if (o->print_ids) {
        print_ids("prompt ids", context->ids, prompt_tokens);
        print_ids("generated ids", context->ids + prompt_tokens, context->count - prompt_tokens);
    }
}

/* ------------------------------------------------------------- main */

static void check_options(const Options *o) {
    if (o->max_new_tokens < 0 || o->max_new_tokens > MAX_NEW_TOKENS)
        gpt3d_fail_user("--max-new-tokens must be between 0 and %d (got %d)", MAX_NEW_TOKENS,
                        o->max_new_tokens);
    if (!(o->temperature >= 0.0) || !isfinite(o->temperature))
        gpt3d_fail_user("--temperature must be a finite number >= 0 (got %g)", o->temperature);
    if (o->top_k < 0) gpt3d_fail_user("--top-k must be >= 0 (got %d)", o->top_k);
    if (o->seed < 0) gpt3d_fail_user("--seed must be >= 0 (got %" PRId64 ")", o->seed);
    if (o->num_samples < 1 || o->num_samples > MAX_SAMPLES)
        gpt3d_fail_user("--num-samples must be between 1 and %d (got %d)", MAX_SAMPLES,
                        o->num_samples);
    if (o->seq_length < 0) gpt3d_fail_user("--seq-length must be >= 0 (got %d)", o->seq_length);
}

static Tokenizer *open_tokenizer(const Options *o, const CheckpointMeta *meta) {
    const char *type = o->tok.tokenizer_type ? o->tok.tokenizer_type : meta->tokenizer_type;
    if (!type[0])
        gpt3d_fail_user("the checkpoint does not record its tokenizer; give --tokenizer-type");
    char err[ERR_SIZE];
    TokenizerOptions tok = o->tok;
    tok.tokenizer_type = (char *)type;
    if (tok.vocab_size == 0 && strcmp(type, "NullTokenizer") == 0)
        tok.vocab_size = meta->model.vocab_size; /* ids need no files */
    Tokenizer *t = tokenizer_open(&tok, err, sizeof err);
    if (!t) gpt3d_fail_user("%s", err);
    if (tokenizer_vocab_size(t) != meta->model.vocab_size)
        gpt3d_fail_user("--tokenizer-type %s has %" PRId64 " tokens but the checkpoint's model "
                        "was trained with a vocabulary of %" PRId64
                        "; give the tokenizer it was trained with",
                        type, tokenizer_vocab_size(t), meta->model.vocab_size);
    return t;
}

/* The window: the checkpoint's seq_length (or --seq-length), but no longer
 * than the longest context this run can reach, since every step costs a
 * forward pass over the whole window. */
static int window_length(const Options *o, const CheckpointMeta *meta, size_t prompt_tokens) {
    int T = o->seq_length ? o->seq_length : meta->model.seq_length;
    if (T > meta->model.max_position_embeddings)
        gpt3d_fail_user("--seq-length %d exceeds the checkpoint's max position embeddings %d", T,
                        meta->model.max_position_embeddings);
    size_t reach = prompt_tokens + (size_t)o->max_new_tokens;
    if (reach < (size_t)T) T = reach > 0 ? (int)reach : 1;
    return T;
}

static const char SUMMARY[] =
    "Prints --prompt and a continuation sampled from a gpt3d checkpoint (any layout) with "
    "--temperature and --top-k; a fixed --seed gives the same text.";

static int run(const Options *o, bool iteration_given) {
    int64_t iteration = 0;
    char resolve_err[2048], note[2048];
    if (!checkpoint_resolve_iteration(o->load, iteration_given, o->iteration, &iteration, note,
                                      sizeof note, resolve_err, sizeof resolve_err))
        gpt3d_fail_user("%s", resolve_err);
    if (note[0]) fprintf(stderr, "note: %s\n", note);
    char err[ERR_SIZE], dir[4096];
    checkpoint_iter_dir(dir, sizeof dir, o->load, iteration);
    CheckpointReader *r = checkpoint_open(o->load, iteration, err, sizeof err);
    if (!r) gpt3d_fail_user("%s", err);
    const CheckpointMeta *meta = checkpoint_meta(r);
    Tokenizer *tok = open_tokenizer(o, meta);

    TokenList context = {0};
    tokenizer_encode(tok, o->prompt, strlen(o->prompt), &context.ids, &context.count, &context.cap);
    if (context.count == 0) token_list_push(&context, tokenizer_eod(tok));

    Backend *be = backend_create(o->device, 0, err, sizeof err);
    if (!be) gpt3d_fail_user("%s", err);
    const int T = window_length(o, meta, context.count);
    TransformerConfig cfg = config_of(meta, T);
    ModelPartition whole = {.tp_size = 1,
                            .tp_rank = 0,
                            .first_layer = 0,
                            .num_local_layers = cfg.num_layers,
                            .has_embedding = true,
                            .has_head = true};
    GPTModel *model = gpt_model_create(be, &cfg, &whole, 1, NULL, NULL, 1);
    load_weights(model, be, r, dir);
    fprintf(stderr,
            "generate: %s (iteration %" PRId64 "): %d layers, hidden %d, %d heads, "
            "vocab %" PRId64 ", window %d tokens, device %s\n",
            dir, iteration, cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads,
            cfg.vocab_size, T, be->name);
    checkpoint_close(r);

    Generator g = {.model = model, .T = T, .vocab = cfg.vocab_size, .eod = tokenizer_eod(tok)};
    g.window = xmalloc((size_t)T * sizeof *g.window);
    g.targets = xcalloc((size_t)T, sizeof *g.targets);
    g.scratch = xmalloc((size_t)cfg.vocab_size * sizeof *g.scratch);
    Sampler s = {.temperature = o->greedy ? 0.0 : o->temperature,
                 .top_k = o->top_k,
                 .seed = (uint64_t)o->seed,
                 .stream = rng_stream_from_name("tools/generate.sampling")};
    const size_t prompt_tokens = context.count;
    for (int j = 0; j < o->num_samples; j++)
        generate(&g, &s, tok, o, (uint64_t)j, &context, prompt_tokens);

    free(g.window);
    free(g.targets);
    free(g.scratch);
    free(context.ids);
    gpt_model_free(model);
    backend_destroy(be);
    tokenizer_free(tok);
    return 0;
}

int main(int argc, char **argv) {
    Options o;
    FlagParser parser;
    int status = flags_parse_main(&parser, FLAGS, NUM_FLAGS, &o, argc, argv, "generate", SUMMARY);
    if (status >= 0) return status;
    check_options(&o);
    int rc = run(&o, flags_was_set(&parser, "iteration"));
    flags_free(&parser, &o);
    return rc;
}
