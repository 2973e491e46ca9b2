# The top-level CMakeLists adds GCC warning/sanitizer flags with add_compile_options, which nvcc rejects. A folder
# that compiles .cu files calls dsinfer_cuda_fix_directory_flags() to hand those flags to C++ files as they are and
# to the host compiler of .cu files through -Xcompiler. (Sanitizers stay off in device-side host code: the CUDA
# runtime is not built for them.)
#
# CMake 3.25 does not know nvcc 13's flag for the C++20 dialect (and takes the CUDA dialect from CXX_STANDARD 20):
# tell it. A macro, so the variables land in the calling folder's scope.
macro(dsinfer_cuda_dialect)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endmacro()

function(dsinfer_cuda_fix_directory_flags)
  get_property(_opts DIRECTORY PROPERTY COMPILE_OPTIONS)
  set(_new "")
  foreach(o IN LISTS _opts)
    list(APPEND _new "$<$<COMPILE_LANGUAGE:CXX,C>:${o}>")
    if(o MATCHES "^-W" AND NOT o MATCHES "^-Wno-missing-field")
      list(APPEND _new "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${o}>")
    endif()
  endforeach()
  set_property(DIRECTORY PROPERTY COMPILE_OPTIONS "${_new}")
endfunction()
