# Fuzz targets (test/fuzz/, see docs/fuzzing.md). Every target is built as
# a replay program (replay.c: runs each committed corpus file once) in every
# mode, registered as fuzz_replay_<name>. With UVCTX_FUZZ=ON (clang, the
# test command's "fuzz" mode) each is also built against libFuzzer and
# fuzz_<name> fuzzes it for UVCTX_FUZZ_SECONDS, failing on a crash and
# leaving the reproducer in the build tree.
option(UVCTX_FUZZ "Build the libFuzzer targets (clang) and their runs" OFF)
set(UVCTX_FUZZ_SECONDS 60 CACHE STRING "Seconds of fuzzing per target")
set(UVCTX_FUZZ_DIR ${CMAKE_CURRENT_LIST_DIR})

add_library(uvctx_fuzz_support STATIC ${UVCTX_FUZZ_DIR}/fuzz_support.c)
target_include_directories(uvctx_fuzz_support PUBLIC ${UVCTX_FUZZ_DIR})
target_link_libraries(uvctx_fuzz_support PUBLIC uvctx_testing)
if(UVCTX_WITH_TLS)
  target_compile_definitions(uvctx_fuzz_support PRIVATE
    UVCTX_TLS_CERT_DIR="${UVCTX_TLS_CERT_DIR}")
  add_dependencies(uvctx_fuzz_support uvctx_tls_certs)
endif()
uvctx_warnings(uvctx_fuzz_support)
uvctx_sanitize(uvctx_fuzz_support)

if(UVCTX_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "UVCTX_FUZZ needs clang (CC=clang)")
  endif()
  # Coverage for the fuzzer in the library and the support code too.
  target_compile_options(uvctx_testing PRIVATE -fsanitize=fuzzer-no-link)
  target_compile_options(uvctx_fuzz_support PRIVATE -fsanitize=fuzzer-no-link)
  add_custom_target(uvctx_fuzzers)
endif()

# uvctx_fuzz_target(NAME SOURCES a.c ... [LIBS ...] [DEFS ...] [INCLUDES ...]
#                   [DEPENDS target ...])
function(uvctx_fuzz_target name)
  cmake_parse_arguments(F "" "" "SOURCES;LIBS;DEFS;INCLUDES;DEPENDS" ${ARGN})
  set(corpus ${UVCTX_FUZZ_DIR}/corpus/${name})
  set(bins fuzz_${name}_replay)
  if(UVCTX_FUZZ)
    list(APPEND bins fuzz_${name})
  endif()
  foreach(bin ${bins})
    if(bin STREQUAL "fuzz_${name}")
      add_executable(${bin} ${F_SOURCES})
      target_compile_options(${bin} PRIVATE -fsanitize=fuzzer)
      target_link_options(${bin} PRIVATE -fsanitize=fuzzer)
    else()
      add_executable(${bin} ${UVCTX_FUZZ_DIR}/replay.c ${F_SOURCES})
    endif()
    target_link_libraries(${bin} PRIVATE uvctx_fuzz_support ${F_LIBS})
    target_compile_definitions(${bin} PRIVATE ${F_DEFS})
    target_include_directories(${bin} PRIVATE ${F_INCLUDES})
    if(F_DEPENDS)
      add_dependencies(${bin} ${F_DEPENDS})
    endif()
    uvctx_warnings(${bin})
    uvctx_sanitize(${bin})
    if(UVCTX_FUZZ)
      add_dependencies(uvctx_fuzzers ${bin})
    endif()
  endforeach()
  add_test(NAME fuzz_replay_${name} COMMAND fuzz_${name}_replay ${corpus})
  set_tests_properties(fuzz_replay_${name} PROPERTIES TIMEOUT 300
    LABELS fuzz_replay)
  if(UVCTX_FUZZ)
    add_test(NAME fuzz_${name}
      COMMAND sh ${UVCTX_FUZZ_DIR}/run-fuzzer.sh $<TARGET_FILE:fuzz_${name}>
              ${corpus} ${CMAKE_CURRENT_BINARY_DIR}/fuzz-${name}
              ${UVCTX_FUZZ_SECONDS})
    math(EXPR limit "${UVCTX_FUZZ_SECONDS} + 120")
    set_tests_properties(fuzz_${name} PROPERTIES TIMEOUT ${limit}
      LABELS fuzz)
  endif()
endfunction()

uvctx_fuzz_target(ctx_ops SOURCES ${UVCTX_FUZZ_DIR}/ctx_ops.c)
uvctx_fuzz_target(trace_json
  SOURCES ${UVCTX_FUZZ_DIR}/trace_json.c ${PROJECT_SOURCE_DIR}/tools/trace/json.c
  INCLUDES ${PROJECT_SOURCE_DIR}/tools/trace)
if(UVCTX_WITH_TLS)
  uvctx_fuzz_target(tls_server
    SOURCES ${UVCTX_FUZZ_DIR}/tls_role.c ${UVCTX_FUZZ_DIR}/fuzz_time.c
    DEFS FZ_SERVER=1)
  uvctx_fuzz_target(tls_client
    SOURCES ${UVCTX_FUZZ_DIR}/tls_role.c ${UVCTX_FUZZ_DIR}/fuzz_time.c
    DEFS FZ_SERVER=0)
  uvctx_fuzz_target(tls_pair
    SOURCES ${UVCTX_FUZZ_DIR}/tls_pair.c ${UVCTX_FUZZ_DIR}/fuzz_time.c)
  uvctx_fuzz_target(relay_flags
    SOURCES ${UVCTX_FUZZ_DIR}/relay_flags.c
            ${PROJECT_SOURCE_DIR}/tools/relay/config.c
    INCLUDES ${PROJECT_SOURCE_DIR}/tools/relay LIBS ${CMAKE_DL_LIBS})
endif()
