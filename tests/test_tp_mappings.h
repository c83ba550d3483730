/* The mapping and position-embedding checks of test_tensor_parallel, kept in
 * their own file; both run on one TP layout. */
#ifndef GPT3D_TEST_TP_MAPPINGS_H
#define GPT3D_TEST_TP_MAPPINGS_H

#include "test_tp_util.h"

void test_tp_mappings(Backend *be, TPGroup *g);
void test_tp_position_embedding(Backend *be, TPGroup *g);

#endif
