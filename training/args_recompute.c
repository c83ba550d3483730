/* Megatron's activation recomputation flags (args_internal.h), with the
 * rules of its arguments.py and TransformerConfig: --recompute-activations
 * means selective; full needs a method and a layer count; selective takes
 * neither. */
#include <stdio.h>

#include "training/args_internal.h"

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

bool args_resolve_recompute(TrainArgs *a, const FlagParser *parser, char *err, size_t err_size) {
    TransformerConfig *m = &a->model;
    const char *granularity = a->recompute_granularity;
    if (a->recompute_activations) {
        if (granularity && transformer_choice_index(RECOMPUTE_GRANULARITY_NAMES, granularity) !=
                               RECOMPUTE_SELECTIVE)
            FAIL("--recompute-activations is Megatron's selective recomputation; it contradicts "
                 "--recompute-granularity %s: give one of them",
                 granularity);
        granularity = "selective";
    }
    const bool method_given = a->recompute_method != NULL;
    const bool layers_given = flags_was_set(parser, "recompute-num-layers");
    m->recompute_granularity = RECOMPUTE_NONE;
    m->recompute_method = RECOMPUTE_UNIFORM;
    m->recompute_num_layers = 0;
    if (!granularity) {
        if (method_given || layers_given)
            FAIL("--recompute-method and --recompute-num-layers need --recompute-granularity full");
        return true;
    }
    const int g = transformer_choice_index(RECOMPUTE_GRANULARITY_NAMES, granularity);
    if (g != RECOMPUTE_SELECTIVE && g != RECOMPUTE_FULL)
        FAIL("--recompute-granularity %s: use full or selective", granularity);
    m->recompute_granularity = (RecomputeGranularity)g;
    if (g == RECOMPUTE_SELECTIVE) {
        if (method_given || layers_given)
            FAIL("--recompute-granularity selective recomputes the core attention of every layer: "
                 "it takes no --recompute-method or --recompute-num-layers (those are for full)");
        return true;
    }
    const int per_stage = m->num_layers / a->pipeline_model_parallel_size;
    if (!method_given)
        FAIL("--recompute-granularity full needs --recompute-method uniform or block");
    const int method = transformer_choice_index(RECOMPUTE_METHOD_NAMES, a->recompute_method);
    if (method < 0) FAIL("--recompute-method %s: use uniform or block", a->recompute_method);
    if (!layers_given || a->recompute_num_layers < 1 || a->recompute_num_layers > per_stage)
        FAIL("--recompute-granularity full needs --recompute-num-layers between 1 and the layers "
             "of a pipeline stage (%d)%s",
             per_stage, layers_given ? "" : "; it was not given");
    m->recompute_method = (RecomputeMethod)method;
    m->recompute_num_layers = a->recompute_num_layers;
    return true;
}
