# The CPU backend's results must not depend on the instruction set: `dsinfer logits` (all 17 rows, fp8 and
# reference precision, 3 threads) with the best kernels, the AVX2 kernels and the scalar ones must write the same
# bytes. Run by CTest as `cmake -DCLI=... -DMODEL=... -DIDS=... -DWORK=... -P same_logits_every_isa.cmake`.
foreach(prec fp8 reference)
  foreach(isa best avx2 scalar)
    set(out "${WORK}/isa_${isa}_${prec}.f32")
    if(isa STREQUAL "best")
      set(env_args "")
    else()
      set(env_args "DSINFER_CPU_KERNELS=${isa}")
    endif()
    execute_process(COMMAND ${CMAKE_COMMAND} -E env ${env_args} "${CLI}" logits --model "${MODEL}" --ids "${IDS}"
                            --out "${out}" --precision ${prec} --threads 3
                    RESULT_VARIABLE rc OUTPUT_VARIABLE so ERROR_VARIABLE se)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "dsinfer logits (${isa}, ${prec}) failed: ${so}${se}")
    endif()
  endforeach()
  foreach(isa avx2 scalar)
    execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files "${WORK}/isa_best_${prec}.f32" "${WORK}/isa_${isa}_${prec}.f32"
                    RESULT_VARIABLE differ)
    if(differ)
      message(FATAL_ERROR "${prec} logits differ between the best kernels and DSINFER_CPU_KERNELS=${isa}")
    endif()
  endforeach()
endforeach()
message(STATUS "same logits with the best, AVX2 and scalar kernels (fp8 and reference)")
