/* Reference GPT-2 forward (HF's GPT2LMHeadModel / llm.c's gpt2_forward,
 * followed from their definitions) and gpt3d's loss on a checkpoint. */
#include "test_interop_reference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "checkpoint/checkpoint.h"
#include "model/gpt_model.h"
#include "test_util.h"

/* out[t, o] = b[o] + sum_i in[t, i] W(o, i) */
static void linear(double *out, const double *in, const float *w, const float *b, int T, int IC,
                   int OC, bool out_major) {
    for (int t = 0; t < T; t++)
        for (int o = 0; o < OC; o++) {
            double acc = b[o];
            for (int i = 0; i < IC; i++)
                acc += in[t * IC + i] * (out_major ? w[(size_t)o * IC + i] : w[(size_t)i * OC + o]);
            out[t * OC + o] = acc;
        }
}

static void layernorm(double *out, const double *in, const float *w, const float *b, int T,
                      int C) {
    for (int t = 0; t < T; t++) {
        double mean = 0, var = 0;
        for (int c = 0; c < C; c++) mean += in[t * C + c];
        mean /= C;
        for (int c = 0; c < C; c++) var += (in[t * C + c] - mean) * (in[t * C + c] - mean);
        var /= C;
        const double rstd = 1.0 / sqrt(var + 1e-5);
        for (int c = 0; c < C; c++) out[t * C + c] = (in[t * C + c] - mean) * rstd * w[c] + b[c];
    }
}

static double gelu_tanh(double x) {
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* Feature index of (part, head, d) in the 3C qkv output. */
static int qkv_feature(const RefModel *m, int part, int head, int d) {
    const int HS = m->C / m->H;
    return m->misread_qkv ? (head * 3 + part) * HS + d : part * m->C + head * HS + d;
}

static void attention(const RefModel *m, double *y, const double *qkv, int T) {
    const int C = m->C, HS = C / m->H;
    double *p = malloc((size_t)T * sizeof *p);
    for (int h = 0; h < m->H; h++)
        for (int t = 0; t < T; t++) {
            double max = -INFINITY, sum = 0;
            for (int u = 0; u <= t; u++) {
                double s = 0;
                for (int d = 0; d < HS; d++)
                    s += qkv[t * 3 * C + qkv_feature(m, 0, h, d)] *
                         qkv[u * 3 * C + qkv_feature(m, 1, h, d)];
                p[u] = s / sqrt((double)HS);
                if (p[u] > max) max = p[u];
            }
            for (int u = 0; u <= t; u++) sum += (p[u] = exp(p[u] - max));
            for (int d = 0; d < HS; d++) {
                double acc = 0;
                for (int u = 0; u <= t; u++) acc += p[u] / sum * qkv[u * 3 * C + qkv_feature(m, 2, h, d)];
                y[t * C + h * HS + d] = acc;
            }
        }
    free(p);
}

double ref_loss(const RefModel *m, const int32_t *tokens, const int32_t *targets, int T) {
    const int C = m->C, F = m->F;
    CHECK(T <= m->P && m->L <= REF_MAX_LAYERS);
    double *x = calloc((size_t)T * C, sizeof *x), *a = calloc((size_t)T * C, sizeof *a);
    double *qkv = calloc((size_t)T * 3 * C, sizeof *qkv), *y = calloc((size_t)T * C, sizeof *y);
    double *hid = calloc((size_t)T * F, sizeof *hid), *o = calloc((size_t)T * C, sizeof *o);
    for (int t = 0; t < T; t++)
        for (int c = 0; c < C; c++)
            x[t * C + c] = (double)m->wte[(size_t)tokens[t] * C + c] + m->wpe[t * C + c];
    for (int l = 0; l < m->L; l++) {
        const RefLayer *w = &m->layer[l];
        layernorm(a, x, w->ln1w, w->ln1b, T, C);
        linear(qkv, a, w->qkvw, w->qkvb, T, C, 3 * C, m->out_major);
        attention(m, y, qkv, T);
        linear(o, y, w->projw, w->projb, T, C, C, m->out_major);
        for (int i = 0; i < T * C; i++) x[i] += o[i];
        layernorm(a, x, w->ln2w, w->ln2b, T, C);
        linear(hid, a, w->fcw, w->fcb, T, C, F, m->out_major);
        for (int i = 0; i < T * F; i++) hid[i] = gelu_tanh(hid[i]);
        linear(o, hid, w->fcprojw, w->fcprojb, T, F, C, m->out_major);
        for (int i = 0; i < T * C; i++) x[i] += o[i];
    }
    layernorm(a, x, m->lnfw, m->lnfb, T, C);
    double loss = 0;
    double *logits = malloc((size_t)m->V * sizeof *logits);
    for (int t = 0; t < T; t++) {
        double max = -INFINITY, sum = 0;
        for (int v = 0; v < m->V; v++) { /* tied head: logits = x . wte rows */
            double acc = 0;
            for (int c = 0; c < C; c++) acc += a[t * C + c] * m->wte[(size_t)v * C + c];
            logits[v] = acc;
            if (acc > max) max = acc;
        }
        for (int v = 0; v < m->V; v++) sum += exp(logits[v] - max);
        loss += max + log(sum) - logits[targets[t]];
    }
    free(logits);
    free(x), free(a), free(qkv), free(y), free(hid), free(o);
    return loss / T;
}

double gpt3d_loss(const char *ckpt_dir, const int32_t *tokens, const int32_t *targets, int T) {
    char err[2048];
    int64_t iteration = 0;
    CHECK_MSG(checkpoint_find_latest(ckpt_dir, &iteration, err, sizeof err), "%s", err);
    CheckpointReader *r = checkpoint_open(ckpt_dir, iteration, err, sizeof err);
    CHECK_MSG(r != NULL, "%s", err);
    const CheckpointMeta *meta = checkpoint_meta(r);
    TransformerConfig cfg = meta->model;
    cfg.seq_length = T;
    const ModelPartition whole = {.tp_size = 1, .first_layer = 0, .num_local_layers = cfg.num_layers,
                                  .has_embedding = true, .has_head = true};
    Backend *be = backend_create("cpu", 0, err, sizeof err);
    CHECK_MSG(be != NULL, "%s", err);
    GPTModel *model = gpt_model_create(be, &cfg, &whole, 1, NULL, NULL, 1);
    const ParamTable *pt = gpt_model_params(model);
    float *params = gpt_model_param_buffer(model); /* CPU: host fp32 */
    for (int i = 0; i < pt->count; i++) {
        const ParamInfo *p = &pt->params[i];
        CHECK_MSG(checkpoint_read(r, p->name, CKPT_WEIGHT, 0, p->canonical_numel,
                                  params + p->offset, err, sizeof err),
                  "%s", err);
    }
    const double loss = gpt_model_forward(model, tokens, targets) / T;
    gpt_model_free(model);
    backend_destroy(be);
    checkpoint_close(r);
    return loss;
}
