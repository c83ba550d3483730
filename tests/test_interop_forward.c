/* Helper of test_interop.sh: gpt3d's loss on a checkpoint (its own CPU
 * model) against a reference forward of the same weights exported to
 * Hugging Face or llm.c files, read here independently of interop/.
 * Usage: test_interop_forward forward-hf CKPT HFDIR | forward-llmc CKPT FILE.
 * Exit status 0: the losses agree, and misreading the qkv layout would
 * have been noticed. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_interop_formats.h"
#include "test_interop_reference.h"
#include "test_util.h"

#define LLMC_HEADER_BYTES 1024

static uint64_t rng_next(uint64_t *state) {
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return *state >> 33;
}

/* ------------------------------------------------- forward checks */

/* n_head from the exported config.json. */
static int config_heads(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t size;
    unsigned char *text = tf_slurp(path, &size);
    cJSON *root = cJSON_Parse((const char *)text);
    free(text);
    const cJSON *heads = root ? cJSON_GetObjectItem(root, "n_head") : NULL;
    CHECK_MSG(cJSON_IsNumber(heads), "%s has no n_head", path);
    const int h = (int)heads->valuedouble;
    cJSON_Delete(root);
    return h;
}

static float *tensor_copy(TfFile *f, const char *name) {
    TfTensor *t = tf_find(f, name);
    CHECK_MSG(t != NULL, "no tensor %s", name);
    float *out = malloc((size_t)tf_numel(t) * 4 + 4);
    for (int64_t k = 0; k < tf_numel(t); k++) out[k] = tf_f32(t, k);
    return out;
}

static void hf_reference(const char *dir, RefModel *m, float **owned, int *n_owned) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    TfFile *f = calloc(1, sizeof *f); /* 128 KiB of descriptors */
    tf_read(f, path);
    const TfTensor *wte = tf_find(f, "transformer.wte.weight"), *wpe = tf_find(f, "transformer.wpe.weight");
    memset(m, 0, sizeof *m);
    m->V = (int)wte->shape[0], m->C = (int)wte->shape[1], m->P = (int)wpe->shape[0];
    for (;; m->L++) {
        snprintf(path, sizeof path, "transformer.h.%d.ln_1.weight", m->L);
        if (!tf_find(f, path)) break;
    }
    m->F = (int)tf_find(f, "transformer.h.0.mlp.c_fc.bias")->shape[0];
#define T(name) (owned[(*n_owned)++] = tensor_copy(f, name))
    m->wte = T("transformer.wte.weight");
    m->wpe = T("transformer.wpe.weight");
    m->lnfw = T("transformer.ln_f.weight");
    m->lnfb = T("transformer.ln_f.bias");
    const char *suffix[12] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                              "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                              "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
    for (int l = 0; l < m->L; l++) {
        const float **slots[12] = {&m->layer[l].ln1w, &m->layer[l].ln1b, &m->layer[l].qkvw,
                                   &m->layer[l].qkvb, &m->layer[l].projw, &m->layer[l].projb,
                                   &m->layer[l].ln2w, &m->layer[l].ln2b, &m->layer[l].fcw,
                                   &m->layer[l].fcb, &m->layer[l].fcprojw, &m->layer[l].fcprojb};
        for (int k = 0; k < 12; k++) {
            snprintf(path, sizeof path, "transformer.h.%d.%s", l, suffix[k]);
            *slots[k] = T(path);
        }
    }
#undef T
    tf_free(f);
    free(f);
}

/* llm.c's file: views into the image, tensors in llm.c's order. */
static void llmc_reference(const char *path, RefModel *m, unsigned char **image) {
    size_t size;
    *image = tf_slurp(path, &size);
    const int32_t *h = (const int32_t *)*image;
    CHECK(h[0] == 20240326 && h[1] == 3);
    memset(m, 0, sizeof *m);
    m->P = h[2], m->V = h[3], m->L = h[4], m->H = h[5], m->C = h[6], m->F = 4 * h[6];
    m->out_major = true;
    const float *p = (const float *)(*image + LLMC_HEADER_BYTES);
    const int64_t C = m->C, L = m->L;
    m->wte = p, p += (int64_t)h[7] * C;
    m->wpe = p, p += m->P * C;
    const int64_t sizes[12] = {C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C};
    for (int k = 0; k < 12; k++)
        for (int l = 0; l < L; l++) {
            const float **slots[12] = {&m->layer[l].ln1w, &m->layer[l].ln1b, &m->layer[l].qkvw,
                                       &m->layer[l].qkvb, &m->layer[l].projw, &m->layer[l].projb,
                                       &m->layer[l].ln2w, &m->layer[l].ln2b, &m->layer[l].fcw,
                                       &m->layer[l].fcb, &m->layer[l].fcprojw, &m->layer[l].fcprojb};
            *slots[k] = p;
            p += sizes[k];
        }
    m->lnfw = p, p += C;
    m->lnfb = p, p += C;
    CHECK((const unsigned char *)p == *image + size);
}

/* gpt3d's loss on the checkpoint equals the reference forward of the
 * exported model; misreading the qkv layout would change it. */
static void check_forward(const char *ckpt, RefModel *m) {
    const int T = m->P;
    int32_t *tokens = malloc((size_t)T * 4), *targets = malloc((size_t)T * 4);
    uint64_t state = 99;
    for (int t = 0; t < T; t++) {
        tokens[t] = (int32_t)(rng_next(&state) % (uint64_t)m->V);
        targets[t] = (int32_t)(rng_next(&state) % (uint64_t)m->V);
    }
    const double ours = gpt3d_loss(ckpt, tokens, targets, T);
    const double ref = ref_loss(m, tokens, targets, T);
    m->misread_qkv = true;
    const double misread = ref_loss(m, tokens, targets, T);
    m->misread_qkv = false;
    printf("mean loss over %d positions: gpt3d %.9f, reference %.9f (qkv misread: %.6f)\n", T,
           ours, ref, misread);
    CHECK_MSG(fabs(ours - ref) <= 1e-5 * fmax(1.0, fabs(ref)), "gpt3d and the reference disagree");
    CHECK_MSG(fabs(misread - ref) > 1e-2, "the check cannot tell the qkv layouts apart");
    free(tokens);
    free(targets);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_interop_forward forward-hf CKPT HFDIR | forward-llmc CKPT FILE\n");
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "forward-hf") && argc == 4) {
        RefModel m;
        float *owned[1024];
        int n = 0;
        hf_reference(argv[3], &m, owned, &n);
        m.H = config_heads(argv[3]);
        check_forward(argv[2], &m);
        for (int i = 0; i < n; i++) free(owned[i]);
    } else if (!strcmp(cmd, "forward-llmc") && argc == 4) {
        RefModel m;
        unsigned char *image = NULL;
        llmc_reference(argv[3], &m, &image);
        check_forward(argv[2], &m);
        free(image);
    } else {
        fprintf(stderr, "usage: test_interop_forward forward-hf CKPT HFDIR | forward-llmc CKPT FILE\n");
        return 2;
    }
    return 0;
}
