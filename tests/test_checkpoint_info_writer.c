/* Helper of test_checkpoint_info.sh.
 *
 *   test_checkpoint_info_writer write KIND SAVE_DIR
 *     writes iteration 5 of a tiny model as two rank files (TP 2) through the
 *     checkpoint API, every parameter cut in two halves, and prints one line
 *     per parameter in state-dict order: "name numel |w| |m| |v|", the norms
 *     from closed forms (element k holds weight k+1, exp_avg -(k+1)/1024,
 *     exp_avg_sq 0.25), so the tool's chunked sums have an independent
 *     reference. KIND: good, noopt (no Adam moments), gap (one element of one
 *     parameter in no file), overlap (one element in both files), missing
 *     (one parameter in no file), extra (a parameter of a third layer the
 *     metadata does not have), reshaped (metadata.json says ffn 24, the files
 *     hold ffn 16); for --compare-to: single (the values of good in one rank
 *     file, TP 1), nan_first (weight element 0 of the word embedding is NaN),
 *     nan_mid (exp_avg element 64 of GAP_PARAM, the first of rank 1's half,
 *     is NaN), inf_last (the last exp_avg_sq element of the final layernorm
 *     bias is +inf), perturbed (weight element 63 of GAP_PARAM, the last of
 *     rank 0's half, is 1e-5 relative off).
 *   test_checkpoint_info_writer json FILE KEY.PATH
 *     prints one value of a JSON document (array elements by index), so the
 *     test reads the tool's --json output with a real parser.
 *   test_checkpoint_info_writer close A B TOL
 *     exit 0 when A and B are numbers, both finite, with
 *     |A - B| <= TOL * max(|A|, |B|); a missing, malformed, NaN or infinite
 *     value fails (the shell's awk may be mawk, which is NaN-blind).
 * Exit status 0 on success, 1 on failure. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/checkpoint.h"
#include "core/errors.h"
#include "model/gpt_model.h"

#define ITERATION 5
#define GAP_PARAM "decoder.layers.1.mlp.linear_fc1.weight"
#define MISSING_PARAM "decoder.layers.1.self_attention.linear_proj.bias"
#define EXTRA_PARAM "decoder.layers.2.input_layernorm.weight"
#define FIRST_PARAM "embedding.word_embeddings.weight"
#define LAST_PARAM "decoder.final_layernorm.bias"

static TransformerConfig tiny_config(void) {
    TransformerConfig cfg = {.num_layers = 2, .hidden_size = 8, .num_attention_heads = 2,
                     .ffn_hidden_size = 16, .vocab_size = 20, .padded_vocab_size = 32,
                     .max_position_embeddings = 8, .seq_length = 8, .init_method_std = 0.02,
                     .seed = 77};
    transformer_config_set_gpt2_variant(&cfg);
    return cfg;
}

static CheckpointMeta tiny_meta(const TransformerConfig *cfg, bool moments) {
    CheckpointMeta m;
    memset(&m, 0, sizeof m);
    m.iteration = ITERATION;
    m.consumed_train_samples = 40;
    m.optimizer_step = ITERATION;
    m.scheduler_num_steps = 40;
    m.loss_scale = 1.0;
    m.model = *cfg;
    m.tensor_model_parallel_size = 2;
    m.pipeline_model_parallel_size = 1;
    m.data_parallel_size = 1;
    m.world_size = 2;
    m.context_parallel_size = 1;
    m.model.seed = cfg->seed;
    m.has_optimizer_state = moments;
    snprintf(m.data_description, sizeof m.data_description, "synthetic");
    snprintf(m.tokenizer_type, sizeof m.tokenizer_type, "ByteTokenizer");
    return m;
}

/* Canonical element k of every parameter, for each tensor. */
static void fill(float *w, float *m, float *v, int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; k++) {
        w[k - begin] = (float)(k + 1);
        m[k - begin] = -(float)(k + 1) / 1024.0f;
        v[k - begin] = 0.25f;
    }
}

/* Canonical element `at` of one tensor, when this rank holds it. */
static void set_element(float *t, int64_t begin, int64_t end, int64_t at, float value) {
    if (at >= begin && at < end) t[at - begin] = value;
}

/* The planted defects of the --compare-to kinds. */
static void poison(const char *kind, const char *name, int64_t n, float *w, float *m, float *v,
                   int64_t begin, int64_t end) {
    if (!strcmp(kind, "nan_first") && !strcmp(name, FIRST_PARAM))
        set_element(w, begin, end, 0, NAN);
    if (!strcmp(kind, "nan_mid") && !strcmp(name, GAP_PARAM)) set_element(m, begin, end, 64, NAN);
    if (!strcmp(kind, "inf_last") && !strcmp(name, LAST_PARAM))
        set_element(v, begin, end, n - 1, INFINITY);
    if (!strcmp(kind, "perturbed") && !strcmp(name, GAP_PARAM))
        set_element(w, begin, end, 63, 64.0f * (1.0f + 1e-5f));
}

/* The [begin, end) that `rank` writes of a parameter of n elements. */
static void rank_range(const char *kind, const char *name, int64_t n, int rank, int64_t *begin,
                       int64_t *end) {
    int64_t half = strcmp(kind, "single") ? n / 2 : n;
    *begin = rank == 0 ? 0 : half;
    *end = rank == 0 ? half : n;
    if (rank == 1 && strcmp(name, GAP_PARAM) == 0) {
        if (strcmp(kind, "gap") == 0) *begin = half + 1;
        if (strcmp(kind, "overlap") == 0) *begin = half - 1;
    }
}

static bool write_rank(const char *kind, const char *save, const ParamTable *t, int rank,
                       bool moments, char *err, size_t err_size) {
    CheckpointInterval *iv = xcalloc((size_t)t->count + 1, sizeof *iv);
    float **buffers = xcalloc(3 * (size_t)t->count, sizeof *buffers);
    int count = 0;
    for (int i = 0; i < t->count; i++) {
        const ParamInfo *p = &t->params[i];
        if (strcmp(kind, "missing") == 0 && strcmp(p->name, MISSING_PARAM) == 0) continue;
        int64_t begin, end;
        rank_range(kind, p->name, p->canonical_numel, rank, &begin, &end);
        float *w = xmalloc((size_t)(end - begin + 1) * sizeof *w);
        float *m = xmalloc((size_t)(end - begin + 1) * sizeof *m);
        float *v = xmalloc((size_t)(end - begin + 1) * sizeof *v);
        fill(w, m, v, begin, end);
        poison(kind, p->name, p->canonical_numel, w, m, v, begin, end);
        buffers[3 * count] = w;
        buffers[3 * count + 1] = m;
        buffers[3 * count + 2] = v;
        CheckpointInterval *c = &iv[count++];
        c->name = p->name;
        c->ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++) c->shape[d] = p->shape[d];
        c->begin = begin;
        c->end = end;
        c->weight = w;
        c->exp_avg = moments ? m : NULL;
        c->exp_avg_sq = moments ? v : NULL;
    }
    int filled = count; /* intervals whose buffers are ours to free */
    float extra[8] = {0};
    if (strcmp(kind, "extra") == 0 && rank == 0) {
        CheckpointInterval *c = &iv[count++];
        *c = (CheckpointInterval){.name = EXTRA_PARAM, .ndim = 1, .shape = {8}, .begin = 0,
                                  .end = 8, .weight = extra, .exp_avg = extra,
                                  .exp_avg_sq = extra};
    }
    bool ok = checkpoint_write_rank(save, ITERATION, rank, iv, count, err, err_size);
    for (int i = 0; i < 3 * filled; i++) free(buffers[i]);
    free(buffers);
    free(iv);
    return ok;
}

/* sqrt(sum_{k=1..n} k^2) and friends, in closed form. */
static void print_expected(const ParamTable *t, const char *kind, bool moments) {
    for (int i = t->count - 1; i >= 0; i--) {
        const ParamInfo *p = &t->params[i];
        if (strcmp(kind, "missing") == 0 && strcmp(p->name, MISSING_PARAM) == 0) continue;
        double n = (double)p->canonical_numel;
        double w = sqrt(n * (n + 1) * (2 * n + 1) / 6);
        if (moments)
            printf("%s %lld %.17g %.17g %.17g\n", p->name, (long long)p->canonical_numel, w,
                   w / 1024, 0.25 * sqrt(n));
        else
            printf("%s %lld %.17g - -\n", p->name, (long long)p->canonical_numel, w);
    }
}

static int write_checkpoint(const char *kind, const char *save) {
    const char *kinds[] = {"good",     "noopt",     "gap",     "overlap",  "missing",
                           "extra",    "reshaped",  "single",  "nan_first", "nan_mid",
                           "inf_last", "perturbed"};
    bool known = false;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) known |= !strcmp(kind, kinds[i]);
    if (!known) {
        fprintf(stderr, "unknown kind '%s'\n", kind);
        return 1;
    }
    bool moments = strcmp(kind, "noopt") != 0;
    TransformerConfig cfg = tiny_config();
    ModelPartition whole = {.tp_size = 1, .tp_rank = 0, .first_layer = 0,
                            .num_local_layers = cfg.num_layers, .has_embedding = true,
                            .has_head = true};
    ParamTable t;
    param_table_build(&t, &cfg, &whole);
    CheckpointMeta meta = tiny_meta(&cfg, moments);
    if (strcmp(kind, "reshaped") == 0) meta.model.ffn_hidden_size = 24;
    const bool single = strcmp(kind, "single") == 0;
    if (single) meta.tensor_model_parallel_size = meta.world_size = 1;
    char err[4096];
    bool ok = checkpoint_begin_save(save, ITERATION, err, sizeof err) &&
              write_rank(kind, save, &t, 0, moments, err, sizeof err) &&
              (single || write_rank(kind, save, &t, 1, moments, err, sizeof err)) &&
              checkpoint_write_meta(save, &meta, err, sizeof err) &&
              checkpoint_publish(save, ITERATION, err, sizeof err);
    if (ok) print_expected(&t, kind, moments);
    else fprintf(stderr, "writing the checkpoint failed: %s\n", err);
    param_table_free(&t);
    return ok ? 0 : 1;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *text = xmalloc(cap);
    size_t n;
    while ((n = fread(text + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) text = xrealloc(text, cap *= 2);
    }
    fclose(f);
    text[len] = '\0';
    return text;
}

static int print_json_value(const char *path, const char *key_path) {
    char *text = read_text(path);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!root) {
        fprintf(stderr, "%s: not readable JSON\n", path);
        return 1;
    }
    char *keys = xstrdup(key_path), *save = NULL;
    const cJSON *node = root;
    for (char *k = strtok_r(keys, ".", &save); node && k; k = strtok_r(NULL, ".", &save))
        node = cJSON_IsArray(node) ? cJSON_GetArrayItem(node, atoi(k))
                                   : cJSON_GetObjectItemCaseSensitive(node, k);
    int rc = 0;
    if (!node) {
        fprintf(stderr, "%s: no %s\n", path, key_path);
        rc = 1;
    } else if (cJSON_IsString(node)) {
        printf("%s\n", node->valuestring);
    } else if (cJSON_IsNumber(node)) {
        printf("%.17g\n", node->valuedouble);
    } else if (cJSON_IsBool(node)) {
        printf("%s\n", cJSON_IsTrue(node) ? "true" : "false");
    } else if (cJSON_IsNull(node)) {
        printf("null\n");
    } else {
        char *s = cJSON_PrintUnformatted(node);
        printf("%s\n", s);
        cJSON_free(s);
    }
    free(keys);
    cJSON_Delete(root);
    return rc;
}

static bool parse_number(const char *text, double *out) {
    char *end = NULL;
    *out = strtod(text, &end);
    return end != text && *end == '\0' && isfinite(*out);
}

static int close_enough(const char *a_text, const char *b_text, const char *tol_text) {
    double a, b, tol;
    if (!parse_number(a_text, &a) || !parse_number(b_text, &b) || !parse_number(tol_text, &tol)) {
        fprintf(stderr, "close: '%s' vs '%s' (tolerance '%s'): not finite numbers\n", a_text,
                b_text, tol_text);
        return 1;
    }
    return fabs(a - b) <= tol * fmax(fabs(a), fabs(b)) ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "write") == 0) return write_checkpoint(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "json") == 0) return print_json_value(argv[2], argv[3]);
    if (argc == 5 && strcmp(argv[1], "close") == 0) return close_enough(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: %s write KIND SAVE_DIR | json FILE KEY.PATH | close A B TOL\n",
            argv[0]);
    return 1;
}
