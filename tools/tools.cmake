# Programs built on the public API only (UVCTX_BUILD_TOOLS). They link the
# shared library, whose hidden visibility keeps them honest. One block per
# program: append new ones below.

# uvctx_add_program(NAME SOURCES a.c ... [LIBS x ...])
function(uvctx_add_program name)
  cmake_parse_arguments(P "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${P_SOURCES})
  target_link_libraries(${name} PRIVATE uvctx::uvctx ${P_LIBS})
  # -rdynamic, so that uvctx_loop_dump() can name the program's functions
  # that created a leaked context.
  set_target_properties(${name} PROPERTIES ENABLE_EXPORTS ON)
  # Installed, the program finds the library installed beside it, under any
  # prefix (the build tree's own RPATH serves until then).
  file(RELATIVE_PATH rel "/p/${CMAKE_INSTALL_BINDIR}" "/p/${CMAKE_INSTALL_LIBDIR}")
  set_target_properties(${name} PROPERTIES INSTALL_RPATH "$ORIGIN/${rel}")
  uvctx_warnings(${name})
  uvctx_sanitize(${name})
endfunction()

# uvctx-demo: a request timeout, a cross-thread cancel, a leak report and
# one budget over a dial, a job and a child (and Ctrl-C cancelling them).
# Its smoke test fails if any of the three does not behave as documented.
uvctx_add_program(uvctx-demo SOURCES examples/timeout_demo.c)
if(UVCTX_BUILD_TESTS)
  add_test(NAME demo_timeout COMMAND uvctx-demo)
  set_tests_properties(demo_timeout PROPERTIES TIMEOUT 60 LABELS tools)
  # Its Ctrl-C part, with a real SIGINT it sends itself.
  add_test(NAME demo_sigint COMMAND uvctx-demo --sigint-self)
  set_tests_properties(demo_sigint PROPERTIES TIMEOUT 60 LABELS tools)
endif()

# uvctx-relay: the TCP/TLS relay (tools/relay/, docs/relay.md). It needs the
# TLS shim, so it is built only with UVCTX_WITH_TLS.
if(UVCTX_WITH_TLS)
  uvctx_add_program(uvctx-relay SOURCES
    tools/relay/main.c
    tools/relay/config.c
    tools/relay/log.c
    tools/relay/server.c
    tools/relay/conn.c
    tools/relay/metrics.c)
  include(tools/relay/debug.cmake)
  install(TARGETS uvctx-relay RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

# uvctx-trace: the trace tool.
include(${CMAKE_CURRENT_LIST_DIR}/trace.cmake)

# uvctx-pg-demo: request handlers with deadlines on a pg pool, a slow query
# cut by its deadline and cancelled on the server (examples/pg_demo.c). Its
# smoke test runs on the pg suite's private cluster.
if(UVCTX_WITH_PG)
  uvctx_add_program(uvctx-pg-demo SOURCES examples/pg_demo.c)
  if(UVCTX_BUILD_TESTS)
    add_test(NAME demo_pg COMMAND sh -c
      ". \"$0\"; [ -n \"$PG_CONNINFO\" ] || exit \${UVCTX_REQUIRE_PEERS:+1}77; exec \"$1\" \"$PG_CONNINFO\""
      ${PROJECT_BINARY_DIR}/pg-cluster.env $<TARGET_FILE:uvctx-pg-demo>)
    set_tests_properties(demo_pg PROPERTIES TIMEOUT 60 LABELS tools
      SKIP_RETURN_CODE 77 FIXTURES_REQUIRED pg_cluster
      RESOURCE_LOCK pg_cluster)
  endif()
endif()
