# interop/: the library (safetensors, layouts) in one program, and the four
# converters end to end with a helper that builds and inspects files
# independently of the library's own reader.
gpt3d_add_test(NAME test_interop_unit SOURCES test_interop_unit.c TIMEOUT 60)
# Two helpers: only the forward check links the compute backend (whose CUDA
# libraries cost every process start half a second).
add_executable(test_interop_helper test_interop_helper.c test_interop_formats.c)
add_executable(test_interop_forward test_interop_forward.c test_interop_reference.c
  test_interop_formats.c)
foreach(helper test_interop_helper test_interop_forward)
  target_link_libraries(${helper} PRIVATE gpt3d)
  target_include_directories(${helper} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
endforeach()
add_test(NAME test_interop
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_interop.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data> $<TARGET_FILE:export_hf>
          $<TARGET_FILE:import_hf> $<TARGET_FILE:export_llmc> $<TARGET_FILE:import_llmc>
          $<TARGET_FILE:test_interop_helper> $<TARGET_FILE:test_interop_forward>)
set_tests_properties(test_interop PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
# Hugging Face Llama: its own helper (a reference LlamaForCausalLM forward,
# and MixtralForCausalLM's).
add_executable(test_interop_llama test_interop_llama.c test_interop_reference.c
  test_interop_formats.c)
target_link_libraries(test_interop_llama PRIVATE gpt3d)
target_include_directories(test_interop_llama PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
add_test(NAME test_interop_llama
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_interop_llama.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data> $<TARGET_FILE:export_hf>
          $<TARGET_FILE:import_hf> $<TARGET_FILE:export_llmc> $<TARGET_FILE:test_interop_llama>
          $<TARGET_FILE:test_interop_helper>)
set_tests_properties(test_interop_llama PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
# Hugging Face Mixtral: the Llama helper's reference forward with Mixtral's
# sparse MoE block.
add_test(NAME test_interop_mixtral
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_interop_mixtral.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data> $<TARGET_FILE:export_hf>
          $<TARGET_FILE:import_hf> $<TARGET_FILE:test_interop_llama>
          $<TARGET_FILE:test_interop_helper>)
set_tests_properties(test_interop_mixtral PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
