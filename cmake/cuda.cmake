# cmake/cuda.cmake: the CUDA schedule (csrc/cuda), included from CMakeLists.txt after the _C target.
#
# LATENTDIV_CUDA=AUTO (default): build the CUDA kernels when check_language(CUDA) finds nvcc;
#                ON: require it (configure fails without a CUDA compiler);  OFF: CPU only.
# pyproject.toml passes the environment variable LATENTDIV_CUDA here (pip install with LATENTDIV_CUDA=ON).
#
# Architectures (LATENTDIV_CUDA_ARCHITECTURES, or CMAKE_CUDA_ARCHITECTURES if the user sets it):
#   75-real 80-real 86-real 89-real  SASS for Turing, Ampere (A100 / RTX 30), Ada (RTX 40, L4, L40)
#   90-real                          SASS for Hopper (H100, H200)
#   100-real 120-real                SASS for Blackwell: data centre (B200, GB200; also runs on sm_103)
#                                    and RTX 50 / RTX PRO (also runs on sm_121): SASS of sm_XY runs on
#                                    every sm_XZ with Z >= Y, so no JIT at first use on these GPUs
#   90-virtual                       compute_90 PTX, which the driver JIT-compiles for any GPU newer
#                                    than the SASS list covers (sm_110, future majors): the lowest PTX
#                                    that every post-Hopper GPU can run.
# Every entry is one more copy of the kernels in _C (about 2.4 MB each, 0.42 MB compressed in the wheel:
# docs/install.md).
# sm_70 (Volta) is not in the list: CUDA 13 dropped it.
#
# The CUDA runtime is linked statically (cudart_static), so _C imports on a machine without a GPU
# or driver (libcuda is only dlopen'ed by cudart at the first CUDA call, which happens only for CUDA
# tensors). Whole-program compilation (no -rdc): no device link step.
#
# Streams: the kernels launch on the stream handle torch gives (0 = torch's default stream = the
# legacy default stream). Do NOT add --default-stream per-thread: handle 0 would then mean a different
# stream than torch's, and results would race with torch's kernels.

include(CheckLanguage)

string(TOUPPER "${LATENTDIV_CUDA}" _ld_cuda_mode)
if(NOT _ld_cuda_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "LATENTDIV_CUDA must be AUTO, ON or OFF, got '${LATENTDIV_CUDA}'")
endif()
if(_ld_cuda_mode STREQUAL "OFF")
  message(STATUS "latentdiv: CUDA kernels disabled (LATENTDIV_CUDA=OFF)")
  return()
endif()

check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  if(_ld_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "latentdiv: LATENTDIV_CUDA=ON but no CUDA compiler was found "
                        "(put nvcc on PATH or set CUDACXX / CMAKE_CUDA_COMPILER)")
  endif()
  message(STATUS "latentdiv: no CUDA compiler found, building the CPU engine only (LATENTDIV_CUDA=AUTO)")
  return()
endif()

set(LATENTDIV_CUDA_ARCHITECTURES "75-real;80-real;86-real;89-real;90-real;100-real;120-real;90-virtual" CACHE STRING
    "CUDA architectures of the latentdiv kernels (CMake CUDA_ARCHITECTURES syntax)")
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES "${LATENTDIV_CUDA_ARCHITECTURES}")
endif()
set(CMAKE_CUDA_RUNTIME_LIBRARY Static)
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_EXTENSIONS OFF)

# One object library: its own flags, then linked into _C (a C++ target) with the static runtime.
add_library(latentdiv_cuda OBJECT csrc/cuda/pair_reduce_cuda.cu csrc/cuda/pair_batched_cuda.cu)
target_include_directories(latentdiv_cuda PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/csrc/include)
target_compile_definitions(latentdiv_cuda PRIVATE LATENTDIV_WITH_CUDA)
set_target_properties(latentdiv_cuda PROPERTIES
  CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}"
  CUDA_RUNTIME_LIBRARY Static
  CUDA_SEPARABLE_COMPILATION OFF
  POSITION_INDEPENDENT_CODE ON
  CUDA_VISIBILITY_PRESET hidden)
# Warnings are errors in the CUDA sources: every nvcc warning (all-warnings) and a launch without an
# explicit stream (default-stream-launch: the schedule must never use the NULL stream implicitly);
# host-side warnings of the host compiler as for the C++ sources. No --use_fast_math: IEEE expf/exp,
# no flush-to-zero, so results stay comparable with the CPU schedule.
target_compile_options(latentdiv_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings,default-stream-launch>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)

target_sources(_C PRIVATE $<TARGET_OBJECTS:latentdiv_cuda>)
target_link_libraries(_C PRIVATE CUDA::cudart_static)
# _C was created (in CMakeLists.txt) before CMAKE_CUDA_ARCHITECTURES was set here, so its own
# CUDA_ARCHITECTURES property was initialised empty. It compiles no .cu file, but it links CUDA objects,
# and the Makefile generators (unlike Ninja) check that property on every target with CUDA in its link:
# "CUDA_ARCHITECTURES is empty for target _C". Give it the kernels' list (no device link: no -rdc).
set_target_properties(_C PROPERTIES CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")

# LATENTDIV_CUDA_ARCHS: what build_info()["cuda_archs"] reports, e.g.
# "sm_75,sm_80,sm_86,sm_89,sm_90,sm_100,sm_120,compute_90".
set(_ld_archs "")
foreach(_arch IN LISTS CMAKE_CUDA_ARCHITECTURES)
  if(_arch MATCHES "^([0-9]+[a-z]?)-real$")
    list(APPEND _ld_archs "sm_${CMAKE_MATCH_1}")
  elseif(_arch MATCHES "^([0-9]+[a-z]?)-virtual$")
    list(APPEND _ld_archs "compute_${CMAKE_MATCH_1}")
  elseif(_arch MATCHES "^[0-9]+[a-z]?$")
    list(APPEND _ld_archs "sm_${_arch}" "compute_${_arch}")
  else()
    list(APPEND _ld_archs "${_arch}")  # all / all-major / native: reported as given
  endif()
endforeach()
list(JOIN _ld_archs "," _ld_archs_string)
target_compile_definitions(_C PRIVATE LATENTDIV_WITH_CUDA "LATENTDIV_CUDA_ARCHS=\"${_ld_archs_string}\"")
message(STATUS "latentdiv: CUDA kernels ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, archs ${_ld_archs_string}, cudart static)")
