#include "model/transformer_config.h"

#include <stdio.h>

bool transformer_config_check(const TransformerConfig *c, const char *where, char *err,
                              size_t err_size) {
#define CHECK_RANGE(f, kind, max, what)                                                            \
    if ((long long)c->f < 1 || (long long)c->f > (long long)(max)) {                               \
        snprintf(err, err_size, "%s: %s = %lld must be between 1 and %lld", where, #f,            \
                 (long long)c->f, (long long)(max));                                               \
        return false;                                                                              \
    }
    TRANSFORMER_ARCH_FIELDS(CHECK_RANGE)
#undef CHECK_RANGE
    if (c->hidden_size % c->num_attention_heads) {
        snprintf(err, err_size, "%s: hidden size %d is not divisible by the %d attention heads",
                 where, c->hidden_size, c->num_attention_heads);
        return false;
    }
    if (c->padded_vocab_size < c->vocab_size) {
        snprintf(err, err_size, "%s: padded vocabulary %lld is smaller than the vocabulary %lld",
                 where, (long long)c->padded_vocab_size, (long long)c->vocab_size);
        return false;
    }
    return true;
}

const char *transformer_config_difference(const TransformerConfig *a, const TransformerConfig *b,
                                          long long *value_a, long long *value_b) {
#define FIRST_DIFFERENCE(f, kind, max, what)                                                       \
    if (a->f != b->f) {                                                                            \
        *value_a = (long long)a->f;                                                                \
        *value_b = (long long)b->f;                                                                \
        return what;                                                                               \
    }
    TRANSFORMER_ARCH_FIELDS(FIRST_DIFFERENCE)
#undef FIRST_DIFFERENCE
    return NULL;
}
